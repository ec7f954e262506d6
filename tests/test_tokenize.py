from transformers import AutoTokenizer

from kubetune.data.tokenize import IGNORE_INDEX, tokenize_sample

SAMPLE = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 plus 2?"},
        {"role": "assistant", "content": "2 plus 2 is 4."},
        {"role": "user", "content": "Reverse the words: red blue"},
        {"role": "assistant", "content": "blue red"},
    ]
}


def test_labels_cover_exactly_the_assistant_turns(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokens = tokenize_sample(tokenizer, SAMPLE)
    learned = tokenizer.decode(
        [t for t, label in zip(tokens["input_ids"], tokens["labels"], strict=False) if label != IGNORE_INDEX]
    )
    assert learned.replace("\n", "") == "2 plus 2 is 4.<|im_end|>blue red<|im_end|>"
    unmasked = tokenize_sample(tokenizer, {**SAMPLE, "unmask": True})
    assert unmasked["labels"] == unmasked["input_ids"]


def test_same_masks_as_the_templates_generation_markers(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ours = tokenize_sample(tokenizer, SAMPLE)
    theirs = tokenizer.apply_chat_template(SAMPLE["messages"], return_dict=True, return_assistant_tokens_mask=True)
    assert theirs["input_ids"] == ours["input_ids"]
    mask = [label != IGNORE_INDEX for label in ours["labels"]]
    # our spans also cover the newline after <|im_end|>; the generation markers stop before it
    differences = [i for i, (a, b) in enumerate(zip(mask, theirs["assistant_masks"], strict=False)) if a != bool(b)]
    assert all(tokenizer.decode([ours["input_ids"][i]]) == "\n" for i in differences)
