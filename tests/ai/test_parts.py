"""The pieces on their own: position tracking through Yjs deltas, the code filter, the
offline tokenizer."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from ai.cleaner import CodeFilter, clean
from ai.tracking import index_after, map_position


def test_positions_follow_deltas() -> None:
    insert_at_5 = [{"retain": 5}, {"insert": "abc"}]
    assert map_position(2, insert_at_5, -1) == 2
    assert map_position(5, insert_at_5, -1) == 5  # stays before text typed right there
    assert map_position(5, insert_at_5, +1) == 8  # or moves after it
    assert map_position(9, insert_at_5, -1) == 12
    delete_2_to_6 = [{"retain": 2}, {"delete": 4}]
    assert map_position(1, delete_2_to_6, -1) == 1
    assert map_position(4, delete_2_to_6, -1) == 2  # inside: to where the deletion was
    assert map_position(10, delete_2_to_6, -1) == 6
    multibyte = [{"insert": "é"}]  # offsets count UTF-8 bytes, as y-py does
    assert map_position(0, multibyte, +1) == 2
    assert index_after(3, [{"retain": 1}, {"delete": 1}]) == 2
    assert index_after(1, [{"retain": 1}, {"delete": 1}]) is None
    assert index_after(0, [{"insert": [{"id": "x"}]}]) == 1


ANSWERS = [
    (
        "Here you go:\n```python\nimport pandas as pd\ndf = pd.read_csv('x')\n```\nEnjoy.",
        "python",
        "import pandas as pd\ndf = pd.read_csv('x')",
    ),
    ("import numpy as np\n\nnp.zeros(3)\n", "python", "import numpy as np\n\nnp.zeros(3)"),
    (
        "```py\na = 1\n```\nThen install:\n```bash\npip install x\n```\n```python\nb = 2\n```",
        "python",
        "a = 1\nb = 2",
    ),
    ("I can't see any data to plot.", "python", "# I can't see any data to plot."),
    ("Sure!\n```sql\nSELECT 1\n```", "sql", "SELECT 1"),
    ("SELECT *\nFROM t\nWHERE x = '```'", "sql", "SELECT *\nFROM t\nWHERE x = '```'"),
    ("x = '`'\ny = \"``\"", "python", "x = '`'\ny = \"``\""),
    ("```\r\nwindows = True\r\n```\r\n", "python", "windows = True"),
]


@pytest.mark.parametrize(("answer", "language", "code"), ANSWERS)
def test_fences_and_prose_are_stripped_however_the_stream_is_cut(
    answer: str, language: str, code: str
) -> None:
    assert clean(answer, language) == code
    rng = random.Random(answer)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(answer)), k=min(len(answer) - 1, rng.randint(1, 12))))
        pieces = [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)], strict=True)]
        f = CodeFilter(language)
        out = "".join(f.feed(p) for p in pieces) + f.finish()
        assert out == code, pieces


def test_code_is_let_through_while_it_streams() -> None:
    f = CodeFilter("python")
    assert f.feed("```python\nimport pa") == "import pa"
    assert f.feed("ndas as pd\n") == "ndas as pd"
    assert f.feed("``") == ""  # might be a closing fence: held
    assert f.feed("`\nprose") == ""
    assert f.finish() == ""


def test_the_tokenizer_works_offline(tmp_path: object) -> None:
    # A fresh process with an empty tiktoken cache and no way to download anything.
    script = (
        "import logging, sys; logging.basicConfig(stream=sys.stdout, level=logging.INFO)\n"
        "from ai.tokens import load_tokenizer\n"
        "t = load_tokenizer('gpt-4'); print(t.name, t.exact, t.count('import pandas as pd'))\n"
        "u = load_tokenizer('SmolLM2-135M-Instruct'); print(u.name, u.exact)\n"
        "v = load_tokenizer('gpt-4o-mini'); print(v.name, v.exact)\n"
    )
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path), "HTTPS_PROXY": "http://127.0.0.1:9", "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "cl100k_base True 4" in lines
    assert "cl100k_base False" in lines
    assert any(
        "o200k_base encoding of model gpt-4o-mini is not available offline" in x for x in lines
    )
