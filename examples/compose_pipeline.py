"""Composing kubetune into your own pipeline: our ``finetune`` pipeline as one step, then your own
evaluation of the exported model, only when the promotion gate promoted it (``promoted``: otherwise ``model`` is a
folder with only a README.md saying why).

    python examples/compose_pipeline.py            # compile to compose_pipeline.yaml
    python examples/compose_pipeline.py --local    # run on this machine with kfp.local (CPU, about a minute)
"""

import sys

from kfp import compiler, dsl
from kfp.dsl import Input, Metrics, Model, Output

from kubetune.pipelines.finetune import finetune
from kubetune.runtime import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def my_exact_match_eval(model: Input[Model], metrics: Output[Metrics], prompts: int = 8):
    """Your own check of the exported model: greedy answers to arithmetic questions, scored by exact match."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model.path)
    llm = AutoModelForCausalLM.from_pretrained(model.path).eval()
    correct = 0
    for a in range(prompts):
        question = [{"role": "user", "content": f"What is {a} plus {a + 1}?"}]
        ids = tokenizer.apply_chat_template(question, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        answer = tokenizer.decode(llm.generate(**ids, max_new_tokens=12, do_sample=False)[0, ids["input_ids"].shape[1] :])
        correct += f"is {2 * a + 1}." in answer
    metrics.log_metric("exact_match", correct / prompts)
    print(f"exact match {correct}/{prompts} on the {model.metadata.get('kind')} model of {model.metadata.get('checkpoint')}")


@dsl.pipeline(name="my-finetune-and-evaluate")
def finetune_and_evaluate(data_uri: str = "kubetune://sample-chat"):
    tuned = finetune(data_uri=data_uri)  # every other parameter keeps its default
    with dsl.If(tuned.outputs["promoted"] == True, name="promoted"):  # noqa: E712 (a KFP condition)
        my_exact_match_eval(model=tuned.outputs["model"])


if __name__ == "__main__":
    if "--local" in sys.argv:
        from kubetune.runs.kfp_local import init  # kfp.local.init, able to read finetune's model output (a dsl.OneOf)

        init(pipeline_root="compose-local")
        finetune_and_evaluate()
        print("outputs under compose-local/ (my-exact-match-eval/metrics: your step's, when promoted)")
    else:
        compiler.Compiler().compile(finetune_and_evaluate, "compose_pipeline.yaml")
        print("wrote compose_pipeline.yaml")
