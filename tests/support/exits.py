"""How a step ends on a refusal: one line, exit 2 (``kubetune.errors.reported``); and the smallest specs of the
two torchrun algorithms."""

import pytest

from kubetune.errors import reported

SFT = {"algorithm": "sft", "effective_batch_size": 8, "max_seq_len": 512, "learning_rate": 1e-5}
OSFT = {**SFT, "algorithm": "osft", "max_tokens_per_gpu": 1024, "unfreeze_rank_ratio": 0.25}


def one_line_exit_2(call, capsys) -> str:
    """What the step prints when ``call`` ends it (``reported``), checked to be exit 2 and one line."""
    with pytest.raises(SystemExit) as ended, reported():
        call()
    err = capsys.readouterr().err.strip()
    assert ended.value.code == 2 and "Traceback" not in err, err
    return err
