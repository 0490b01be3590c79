"""prompts.json for the producer: reading the file, the three usage modes, and validation of
every item into routed ImageRequests before anything runs."""
from producer.prompts.items import (DefaultsProblem, ParsedRequests, batch_id_problem, default_output,
                                    load_prompts_file, output_names, parse_prompts, slugify)

__all__ = ["DefaultsProblem", "ParsedRequests", "batch_id_problem", "default_output", "load_prompts_file",
           "output_names", "parse_prompts", "slugify"]
