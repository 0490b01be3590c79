"""prompts.json for the producer: reading the file, the three usage modes, and validation of
every item into routed ImageRequests before anything runs (nothing is written).

    data = load_prompts_file("prompts.json")      # reading.py: JSON with line/column problems
    requests = parse_prompts(data, batch_id=..., output_root=..., registry=...)   # items.py

fields.py holds the forms and field names, outputs.py the output paths (and batch ids, which
become folder names), references.py the reference images.
"""

from producer.prompts.fields import DefaultsProblem
from producer.prompts.items import ParsedRequests, parse_prompts
from producer.prompts.outputs import batch_id_problem, default_output, output_names, slugify
from producer.prompts.reading import load_prompts_file

__all__ = [
    "DefaultsProblem",
    "ParsedRequests",
    "batch_id_problem",
    "default_output",
    "load_prompts_file",
    "output_names",
    "parse_prompts",
    "slugify",
]
