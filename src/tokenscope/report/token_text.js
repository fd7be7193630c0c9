// The token text, shared by the token view and the side-by-side view (pasted in at
// __TOKEN_TEXT_SCRIPT__ by tokenscope.report.pages.sequence_page_template): the prompt's messages,
// the metric selector's options, one span per token and the tooltip that follows the pointer.
// Each page defines DATA before it, and fmt, colour(key) and show(i, event) of its own.
const text = document.getElementById("text");
const tooltip = document.getElementById("tooltip");
const select = document.getElementById("metric");
const shown = (s) => JSON.stringify(s);

const promptBox = document.getElementById("prompt");
for (const m of DATA.messages) {
  const div = document.createElement("div");
  div.className = "message";
  div.textContent = `${m.role}: ${m.content}`;
  promptBox.appendChild(div);
}
for (const m of DATA.metrics) {
  const option = document.createElement("option");
  option.value = m.key;
  option.textContent = m.label;
  select.appendChild(option);
}
const spans = DATA.tokens.map((token, i) => {
  const span = document.createElement("span");
  span.className = "tok";
  span.dataset.index = i;
  // A newline gets a visible mark, so that it can be seen and hovered like any other token.
  span.textContent = token.replaceAll("\n", "↵\n");
  span.addEventListener("mouseenter", (event) => show(i, event));
  span.addEventListener("mousemove", (event) => place(event));
  span.addEventListener("mouseleave", hide);
  text.appendChild(span);
  return span;
});

function place(event) {
  const pad = 14;
  let x = event.clientX + pad, y = event.clientY + pad;
  const box = tooltip.getBoundingClientRect();
  if (x + box.width > window.innerWidth) x = Math.max(0, event.clientX - box.width - pad);
  if (y + box.height > window.innerHeight) y = Math.max(0, event.clientY - box.height - pad);
  tooltip.style.left = `${x}px`;
  tooltip.style.top = `${y}px`;
}

function hide() {
  tooltip.style.display = "none";
  spans.forEach((s) => s.classList.remove("active"));
}
