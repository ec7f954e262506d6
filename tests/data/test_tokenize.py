import json
import shutil

import pytest
from transformers import AutoTokenizer

from kubetune.data.records import BadRecord
from kubetune.data.tokenize import IGNORE_INDEX, ChatEncoder, read_jsonl, tokenize_samples
from kubetune.embedded.sample_data import SAMPLE_DATA

SAMPLE = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 plus 2?"},
        {"role": "assistant", "content": "2 plus 2 is 4."},
        {"role": "user", "content": "Reverse the words: red blue"},
        {"role": "assistant", "content": "blue red"},
    ]
}
# ChatML with a <think> block, as reasoning models render it (the tiny model's own template has none)
REASONING_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message.get('reasoning_content') -%}{{ '<think>' + message['reasoning_content'] + '</think>\n' }}{%- endif -%}"
    "{{ message['content'] + '<|im_end|>\n' }}"
    "{%- endfor -%}"
)


def tokenize_sample(tokenizer, record: dict) -> dict:
    """One raw record through ``tokenize_samples``, as the LoRA backend and the evaluation tokenize rows."""
    (tokens,), _ = tokenize_samples(tokenizer, [record])
    return tokens


def learned(tokenizer, tokens) -> str:
    return tokenizer.decode([t for t, label in zip(tokens["input_ids"], tokens["labels"], strict=True) if label != IGNORE_INDEX])


def test_labels_cover_assistant_content_and_its_end_of_turn_token(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokens = tokenize_sample(tokenizer, SAMPLE)
    assert learned(tokenizer, tokens) == "2 plus 2 is 4.<|im_end|>blue red<|im_end|>"
    assert tokens["num_loss_counted_tokens"] == sum(label != IGNORE_INDEX for label in tokens["labels"][1:])
    # unmask: every turn's content but the system prompt, and no template text
    unmasked = tokenize_sample(tokenizer, {**SAMPLE, "unmask": True})
    assert (
        learned(tokenizer, unmasked) == "What is 2 plus 2?2 plus 2 is 4.<|im_end|>Reverse the words: red blueblue red<|im_end|>"
    )


def test_same_ids_and_masks_as_the_templates_generation_markers(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ours = tokenize_sample(tokenizer, SAMPLE)
    theirs = tokenizer.apply_chat_template(SAMPLE["messages"], return_dict=True, return_assistant_tokens_mask=True)
    assert theirs["input_ids"] == ours["input_ids"]
    assert [label != IGNORE_INDEX for label in ours["labels"]] == [bool(m) for m in theirs["assistant_masks"]]


def test_loading_tokenizer_files_directly_matches_autotokenizer(tiny_model):
    records = list(read_jsonl(SAMPLE_DATA))[:50] + [{**SAMPLE, "unmask": True}, {"document": "red blue green"}]
    direct = ChatEncoder.load(tiny_model).encode(records)
    through_transformers = ChatEncoder.from_tokenizer(AutoTokenizer.from_pretrained(tiny_model)).encode(records)
    assert direct == through_transformers
    rendered = ChatEncoder.load(tiny_model).render(SAMPLE)[0]
    assert rendered == AutoTokenizer.from_pretrained(tiny_model).apply_chat_template(SAMPLE["messages"], tokenize=False)


def test_a_template_that_drops_content_is_a_clear_record_error(tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'][:3] }}{% endfor %}")
    result = ChatEncoder.load(model).encode([SAMPLE])[0]
    assert isinstance(result, BadRecord) and result.code == "template_error"


def _instructlab(data_path, model, tmp_path, max_seq_len=4096):
    from instructlab.training.data_process import process_messages_into_input_ids

    process_messages_into_input_ids(str(data_path), str(tmp_path / "ilab"), max_seq_len, str(model), 1)
    return list(read_jsonl(tmp_path / "ilab" / "data.jsonl"))


def _ours(records, model, max_seq_len=4096):
    """Our samples, kept the way instructlab-training keeps them (see the test's docstring)."""
    samples = ChatEncoder.load(model).encode(records)
    return [{k: s[k] for k in ("input_ids", "labels", "len")} for s in samples if 20 <= s["len"] < max_seq_len]


@pytest.mark.slow
def test_same_token_ids_and_masks_as_instructlab_training(tmp_path, tiny_model):
    """instructlab-training's own processing of the bundled dataset (plus unmask samples) gives exactly our ids and labels.

    The one difference, accounted for in ``_ours``: instructlab-training also drops samples shorter than
    20 tokens (a leftover filter for broken synthetic data, marked TODO-remove in its code) and keeps
    ``len < max_seq_len`` where we keep ``len <= max_seq_len``. 20 of the 320 bundled samples are that short.
    """
    records = list(read_jsonl(SAMPLE_DATA)) + [{**SAMPLE, "unmask": True}, SAMPLE]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    theirs = _instructlab(data, tiny_model, tmp_path)
    ours = _ours(records, tiny_model)
    assert len(theirs) == len(ours) == 302
    assert theirs == ours


@pytest.mark.slow
def test_same_reasoning_masks_as_instructlab_training(tmp_path, tiny_model):
    model = tmp_path / "reasoning-model"
    shutil.copytree(tiny_model, model)
    (model / "chat_template.jinja").write_text(REASONING_TEMPLATE)
    records = [
        {
            "messages": [
                {"role": "user", "content": "What is 12 plus 30, and why?"},
                {"role": "assistant", "content": "12 plus 30 is 42.", "reasoning_content": "Add the tens, then the ones."},
                {"role": "user", "content": "And 2 plus 2? Answer in a sentence."},
                {"role": "assistant", "content": "2 plus 2 is 4, a small sum."},
            ]
        }
    ]
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(records[0]) + "\n")
    theirs = _instructlab(data, model, tmp_path)
    assert theirs == _ours(records, model)
    text = AutoTokenizer.from_pretrained(model).decode([t for t in theirs[0]["labels"] if t != IGNORE_INDEX])
    assert text.startswith("Add the tens, then the ones.</think>\n12 plus 30 is 42.<|im_end|>")


TOOL_TEMPLATE = (
    "{%- if tools -%}{{ '<|im_start|>system\nTools: ' + tools | map(attribute='function.name') | join(', ') + '<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message.get('tool_calls') -%}"
    "{%- for call in message['tool_calls'] -%}"
    "{{ '<tool_call>' + call['function']['name'] + ' ' + call['function']['arguments'] | tojson + '</tool_call>' }}"
    "{%- endfor -%}"
    "{%- else -%}{{ message['content'] }}{%- endif -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)
TOOL_RECORD = {
    "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
    "messages": [
        {"role": "user", "content": "What is 2 plus 2?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "add", "arguments": {"a": 2}}}]},
        {"role": "tool", "name": "add", "content": "4"},
        {"role": "assistant", "content": "2 plus 2 is 4."},
    ],
}


def test_a_tool_call_turn_is_learned_as_the_template_renders_it(tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "chat_template.jinja").write_text(TOOL_TEMPLATE)
    tokenizer = AutoTokenizer.from_pretrained(model)
    text, _ = ChatEncoder.load(model).render(TOOL_RECORD)
    assert text == tokenizer.apply_chat_template(TOOL_RECORD["messages"], tools=TOOL_RECORD["tools"], tokenize=False)
    tokens = tokenize_sample(tokenizer, TOOL_RECORD)
    assert learned(tokenizer, tokens) == '<tool_call>add {"a": 2}</tool_call><|im_end|>2 plus 2 is 4.<|im_end|>'
    # a template that ignores tool calls would learn an empty turn: the record is refused instead
    with pytest.raises(BadRecord, match=r"messages\[1\] calls a tool, and the model's chat template does not render tool calls"):
        tokenize_sample(AutoTokenizer.from_pretrained(tiny_model), TOOL_RECORD)
