"""A throwaway single-node SLURM cluster on this machine, for tests/workflow/test_slurm.py.

Debian's `slurm-wlm` and `munge` packages install the daemons but start nothing here, so this
starts them directly: `munged` as the munge user (unless one already answers), `slurmctld` and
`slurmd -N localhost`, all in the foreground as children of this process, with the slurm.conf
built from slurm.conf.in (no accounting, no cgroups, one partition). `Cluster.stop` cancels the
cluster's jobs and stops the daemons it started, by pid.

By hand, as root, to try `--workflow-profile profiles/slurm` against it:

    .venv/bin/python tests/slurm/cluster.py      # prints the settings; Enter or Ctrl-C stops it
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import string
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTITION = "tokenscope"
ACCOUNT = "tokenscope"
PROGRAMS = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
# The plugin runs `srun` inside each job with the SLURM_* variables removed (SLURM_CONF too), so
# srun finds the configuration where a configless slurmd would have put it.
RUN_CONF = Path("/run/slurm/conf/slurm.conf")
MARKER = "# tokenscope test cluster\n"
MUNGE_RUN_DIR = Path("/run/munge")


class Unavailable(Exception):
    """SLURM cannot run on this machine; the message says why."""


def check_available() -> None:
    """Raise Unavailable unless this machine can run the test cluster."""
    missing = [name for name in PROGRAMS if not _which(name)]
    if missing:
        raise Unavailable(
            f"SLURM is not installed ({', '.join(missing)} not found); on Debian: "
            "apt-get install slurm-wlm munge (.ci/run does this)"
        )
    if os.geteuid() != 0:
        raise Unavailable("starting slurmd and munged needs root")
    if SYSTEM_CONF.exists():
        raise Unavailable(f"{SYSTEM_CONF} exists: this machine belongs to a cluster, the test does not start its own")
    if RUN_CONF.exists() and not RUN_CONF.read_text().startswith(MARKER):
        raise Unavailable(f"{RUN_CONF} exists: a configless slurmd runs here, the test does not start its own")
    if not Path("/etc/munge/munge.key").exists():
        raise Unavailable("/etc/munge/munge.key is missing (reinstall the munge package)")


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(Path(d) / name) for d in ("/usr/sbin", "/sbin") if (Path(d) / name).exists()), None
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def client_env(conf: Path) -> dict[str, str]:
    """This environment without SLURM job or client settings, pointed at `conf`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    env["SLURM_CONF"] = str(conf)
    return env


@dataclass
class Cluster:
    root: Path
    conf: Path
    partition: str = PARTITION
    account: str = ACCOUNT
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    created: list[Path] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return client_env(self.conf)

    def command(self, *args: str, check: bool = True, timeout: float = 20) -> str:
        result = subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def jobs(self) -> dict[str, tuple[str, str]]:
        """SLURM job id -> (state, comment) of every job slurmctld still knows (see MinJobAge)."""
        out = self.command("squeue", "--states=all", "--noheader", "--format=%i|%T|%k")
        rows = (line.split("|", 2) for line in out.splitlines() if line.strip())
        return {job_id: (state, comment) for job_id, state, comment in rows}

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.root / "log" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return f"--- {path}\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Cancel the cluster's jobs, stop the daemons started here (by pid), remove RUN_CONF."""
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            try:
                active = [
                    j
                    for j, (state, _) in self.jobs().items()
                    if state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED")
                ]
                if active:
                    self.command("scancel", *active, check=False)
                    deadline = time.monotonic() + 20
                    while time.monotonic() < deadline and any(
                        state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")
                        for state, _ in self.jobs().values()
                    ):
                        time.sleep(0.5)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        for path in reversed(self.created):
            if path.is_dir():
                try:
                    path.rmdir()
                except OSError:
                    pass
            else:
                path.unlink(missing_ok=True)
        self.created.clear()


def start(root: Path, timeout: float = 30) -> Cluster:
    """Start munged (unless one answers), slurmctld and slurmd; return once the node is idle."""
    check_available()
    root = root.resolve()
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    template = string.Template((HERE / "slurm.conf.in").read_text())
    text = MARKER + template.substitute(
        root=root,
        ctld_port=_free_port(),
        slurmd_port=_free_port(),
        cpus=os.cpu_count() or 1,
        memory_mb=max(1024, int(_memory_mb() * 0.9)),
        partition=PARTITION,
    )
    conf = root / "slurm.conf"
    conf.write_text(text)
    cluster = Cluster(root=root, conf=conf)
    try:
        for directory in (RUN_CONF.parent.parent, RUN_CONF.parent):
            if not directory.exists():
                directory.mkdir()
                cluster.created.append(directory)
        RUN_CONF.write_text(text)
        cluster.created.append(RUN_CONF)
        _start_munged(cluster, timeout)
        _spawn(cluster, "slurmctld", [_which("slurmctld"), "-D", "-f", str(conf)])
        _wait(cluster, timeout, "slurmctld", lambda: "is UP" in cluster.command("scontrol", "ping", check=False))
        _spawn(cluster, "slurmd", [_which("slurmd"), "-D", "-N", "localhost", "-f", str(conf)])
        _wait(
            cluster,
            timeout,
            "slurmd",
            lambda: (
                cluster.command("sinfo", "--noheader", "--nodes=localhost", "--format=%t", check=False).strip()
                == "idle"
            ),
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _munge_answers() -> bool:
    encoded = subprocess.run([_which("munge"), "-n"], capture_output=True, check=False)
    return encoded.returncode == 0


def _start_munged(cluster: Cluster, timeout: float) -> None:
    if _munge_answers():
        return  # a munged is already running: use it, leave it running
    if not MUNGE_RUN_DIR.exists():
        MUNGE_RUN_DIR.mkdir(mode=0o755)
    shutil.chown(MUNGE_RUN_DIR, "munge", "munge")
    _spawn(cluster, "munged", [_which("munged"), "--foreground"], user="munge")
    _wait(cluster, timeout, "munged", _munge_answers)


def _spawn(cluster: Cluster, name: str, argv: list[str], user: str | None = None) -> None:
    extra = {"user": user, "group": user, "extra_groups": []} if user else {}
    with open(cluster.root / "log" / f"{name}.out", "w") as log:
        cluster.processes[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=cluster.env,
            start_new_session=True,
            **extra,
        )


def _wait(cluster: Cluster, timeout: float, name: str, ready) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process = cluster.processes.get(name)
        if process is not None and process.poll() is not None:
            out = (cluster.root / "log" / f"{name}.out").read_text(errors="replace")
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{out}\n{cluster.log_tail(name)}")
        if ready():
            return
        time.sleep(0.3)
    raise RuntimeError(
        f"{name} not ready after {timeout} s\n{cluster.log_tail('slurmctld')}\n{cluster.log_tail('slurmd')}"
    )


def main() -> None:
    import tempfile

    cluster = start(Path(tempfile.mkdtemp(prefix="tokenscope-slurm-")))
    try:
        print(
            f"SLURM is up: partition {cluster.partition}, no accounting (any account name is accepted).\n"
            f"  export SLURM_CONF={cluster.conf}\n"
            "  snakemake --workflow-profile profiles/slurm --slurm-status-command squeue \\\n"
            f"    --default-resources slurm_partition={cluster.partition} slurm_account={cluster.account} "
            "runtime=60 mem_mb=4000\n"
            "Press Enter (or Ctrl-C) to stop it."
        )
        input()
    except (KeyboardInterrupt, EOFError):
        pass
    finally:
        cluster.stop()
        print("stopped")


if __name__ == "__main__":
    main()
