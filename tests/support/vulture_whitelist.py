"""Names `vulture` cannot see used (tests/test_dead_code.py): a framework calls or reads them. Never imported.

Each entry says who uses it. The fields of the Training Hub parameter models are whitelisted by
tests/test_dead_code.py from the models themselves.
"""

# ruff: noqa: B018, F821

# typer: commands registered with a decorator and called by click
list_  # kubetune schedule list
pause  # kubetune schedule pause
worker  # kubetune-node worker (torchrun's processes)

# pydantic validators and dataclass/pydantic fields, read through the model (asdict, model_dump, KFP outputs)
_._one_kind
_._ratio
_._seed
perplexity
skipped_files
mb_per_s
p95
registered_model_id
model_version_id
model_artifact_id
overwritten

# callbacks and hooks a library calls: transformers.TrainerCallback, mini-trainer's callbacks, KFP's client
_.on_step_end
_.should_save
_.should_training_stop
_.grad  # kubetune.memory.trace: a parameter's gradient set to None as torch accumulates it (torch reads it)
_.on_evaluate
_.on_train_end
_.on_train_begin  # the progress line's TRL callback (kubetune/steps/progress.py), with the two below
_.on_step_begin
_.on_log
_.get_kfp_healthz
sleep_duration  # kfp.Client.get_kfp_healthz's own parameter, kept for its callers

# the CPU-mode stand-ins for torch.cuda (kubetune/backends/cpu_mode.py): torch and the backends read them
__instancecheck__
__subclasscheck__
__new__
_.set_device
_.current_device
_.memory_stats
_.reset_peak_memory_stats

# attributes a library reads: tokenizers, KFP's pipeline decorator (inspect.signature)
_.pre_tokenizer
_.__qualname__
_.__signature__
_.__annotations__

# a diagnostic kept for its test: which torch.cuda call sites CPU mode does not cover (tests/backends/test_cpu_mode.py)
missing_sites  # kubetune/backends/cpu_mode.py

# a file-like protocol method boto3 calls (the hashing reader must not be rewound): checkpoint_mirror/remote.py
_.seekable
# config attributes transformers reads when the trace builds a reduced-depth model: memory/trace.py
_.num_hidden_layers
_.use_cache
# a shape helper kept for its test (the real-step comparison builds a 4-layer copy): tests/memory/test_trace_vs_real.py
with_layers  # kubetune/memory/trace.py
# lm-eval calls it by name from the held-out task's YAML (process_results: !function held_out_metric.process_results)
process_results  # kubetune/benchmark/held_out_metric.py
