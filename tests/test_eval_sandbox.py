"""The code sandbox: hostile samples fail within their time limit and the evaluator goes on."""

from __future__ import annotations

import json
import math
import time
from itertools import combinations

from chatsmith.eval.code_eval import pass_at_k, program
from chatsmith.eval.code_sandbox import run_program, run_programs
from chatsmith.eval.runner import EvalSettings, evaluate_model

TIMEOUT = 3.0

GOOD = "def add(a, b):\n    return a + b\nassert add(2, 3) == 5\n"


def hostile(escape_path: str) -> dict[str, str]:
    return {
        "infinite loop": "while True:\n    pass\n",
        "fork bomb": "import os\nwhile True:\n    os.fork()\n",
        "fork bomb via subprocess": (
            "import subprocess, sys\nwhile True:\n    subprocess.Popen([sys.executable, '-c', '1'])\n"
        ),
        "10 GB allocation": "x = bytearray(10 * 1024**3)\nx[-1] = 1\n",
        "write outside its folder": f"open({escape_path!r}, 'w').write('escaped')\n",
        "read the environment": "import os\nassert os.environ['CHATSMITH_TEST_SECRET'] == 'hunter2'\n",
        "read the parent's environment": (
            "import os\nassert b'hunter2' in open(f'/proc/{os.getppid()}/environ', 'rb').read()\n"
        ),
        "exit early with success": "import sys\nsys.exit(0)\n",
    }


def test_hostile_samples_fail_within_their_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATSMITH_TEST_SECRET", "hunter2")
    escape = tmp_path / "escaped.txt"
    for name, code in hostile(str(escape)).items():
        t0 = time.time()
        r = run_program(code, timeout_s=TIMEOUT, memory_mb=512)
        assert not r.passed, name
        assert time.time() - t0 < TIMEOUT + 5, f"{name} was not stopped in time"
    assert not escape.exists()
    assert run_program(GOOD, TIMEOUT).passed  # and the sandbox still runs honest code


def test_writing_inside_its_own_folder_is_allowed():
    code = "open('scratch.txt', 'w').write('x')\nassert open('scratch.txt').read() == 'x'\n"
    assert run_program(code, TIMEOUT).passed


def test_evaluator_goes_on_after_bad_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATSMITH_TEST_SECRET", "hunter2")
    bad = list(hostile(str(tmp_path / "x.txt")).values())
    progs = [bad[0], GOOD, bad[1], bad[3], GOOD, bad[4], bad[5]]
    results = run_programs(progs, timeout_s=TIMEOUT, memory_mb=512, workers=2)
    assert [r.passed for r in results] == [False, True, False, False, True, False, False]
    assert results[0].status == "timeout"


def test_pass_at_k_matches_its_definition():
    # pass@k = P(at least one of k samples drawn without replacement passes), by enumeration.
    for n in (1, 3, 5):
        for c in range(n + 1):
            for k in range(1, n + 1):
                draws = list(combinations([True] * c + [False] * (n - c), k))
                want = sum(any(d) for d in draws) / len(draws)
                assert math.isclose(pass_at_k(n, c, k), want, abs_tol=1e-12)


def test_code_task_through_the_evaluator(tmp_path, tiny_tok, monkeypatch):
    """HumanEval-format problems: a right completion passes, a hanging one fails, the rest go on."""
    import chatsmith.eval.code_eval as code_eval
    from chatsmith.model.build import build_model
    from chatsmith.model.gpt import GPTConfig

    problems = [
        {
            "task_id": f"T/{i}",
            "prompt": f"def f{i}(x):\n",
            "test": f"def check(g):\n    assert g(2) == {i} + 2\n",
        }
        for i in range(3)
    ]
    for p in problems:
        p["entry_point"] = p["prompt"][4:6]
    head = {"task": {"name": "code", "n_samples": 2, "k": [1, 2], "timeout_s": TIMEOUT, "max_new_tokens": 4}}
    (tmp_path / "code.jsonl").write_text("\n".join(json.dumps(r) for r in [head, *problems]) + "\n")
    answers = {
        0: ["    return x + 0\n", "    return x\n"],  # both right
        1: ["    while True: pass\n", "    return x + 1\n"],  # one hangs, one right
        2: ["    return 0\n", "    return None\n"],  # both wrong
    }
    calls = []

    def fake_generate(model, tok, prompts, max_new_tokens, run_tools, dtype, seeds, temperature, stop):
        i = len(calls)
        calls.append(seeds)
        return [{"text": t, "tool_results": []} for t in answers[i]]

    monkeypatch.setattr(code_eval, "generate_texts", fake_generate)
    cfg = GPTConfig(tiny_tok.vocab_size, 1, 32, 2, 2, 16, 64, 32)
    res = evaluate_model(build_model(cfg, seed=0), tiny_tok, [tmp_path / "code.jsonl"], EvalSettings())
    m = res["code"]["metrics"]
    assert m["n"] == 3
    assert math.isclose(m["pass@1"], (1.0 + 0.5 + 0.0) / 3)
    assert math.isclose(m["pass@2"], (1.0 + 1.0 + 0.0) / 3)
    assert len({s for seeds in calls for s in seeds}) == 6  # every sample has its own seed
    assert program(problems[0], answers[0][0]).endswith("check(f0)\n")
