"""The version of tokenscope's table schemas (docs/schema.md), torch-free so that rules can read it.

Written into every table's metadata, and a param of the rules that write per-token and pair
tables: a new version reruns them on existing results, whose tables lack the new columns.

History. 2: the token table gained `in_answer`. 3: the generations table gained the outcome
columns (answer, extracted_answer, correct, opens_think, closes_think, has_boxed), the token table
varentropy, margin and sampling_entropy, the pair table both models' top-k alternatives. 4: the
token table gained tempered_entropy.
"""

SCHEMA_VERSION = "4"
