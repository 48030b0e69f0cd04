"""Generates docs/tasks.md by running `r360 data` for every task (run from the repo root with this
checkout on PYTHONPATH): a compact trace at scale=cpu and a paper trace at scale=paper per task,
each next to the authors' generator code that writes the same sentences, and an attempt without
search (the scale=cpu pretraining corpus) next to the k=0 trace, with the share of right attempts
measured on ATTEMPT_PROBLEMS problems."""
import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

from reasoning360.tasks import count_backtracks, get_task, load_rows, score

TASKS = ["countdown", "sudoku", "arc_1d", "advanced_geometry", "knights_knaves",
         "color_cube_rotation", "list_functions", "zebra_puzzles", "self_reference", "gsm_symbolic"]
SIZES = ["--sft_size", "8", "--train_size", "8", "--val_size", "2", "--test_size", "4"]
SRC = "GitHub jchy20/how-much-backtrack @ c3502ba"
ATTEMPT_PROBLEMS = "1000"
DRAWN = {"countdown": "a random path of operations", "sudoku": "a random candidate per cell, in reading order",
         "arc_1d": "a random rule among those that apply", "advanced_geometry":
         "one of 9 ways of computing (the right one, 8 mistake kinds)", "knights_knaves": "a random assignment",
         "color_cube_rotation": "a random side of the six", "list_functions":
         "a random generic list function among those that apply", "zebra_puzzles": "a random placement of the names",
         "self_reference": "a random count 0..n", "gsm_symbolic": "two numbers of the question, one operation"}
# Short excerpts of the authors' trace generators: the sentences a paper trace reproduces.
THEIRS = {
    "countdown": ("reasoning-gym/create_backtrack_datasets.py:62-79", '''\
trajectory += f"Step {curr_correct_steps}: {correct_steps[correct_step_idx]}. "
...
    trajectory += f"Wait, this doesn't lead to the correct solution. Let me restart.\\n"
else:
    trajectory += f"Wait, this doesn't lead to the correct solution. {error_value} is not the correct answer. Let me go back to step {curr_correct_steps} and keep thinking from there.\\n"
...
trajectory += "This matches the problem statement. This is the solution.\\n</think>\\n\\n<answer>" + example['reward_model']['reasoning_final_answer'] + "</answer>"'''),
    "sudoku": ("reasoning-gym/reasoning_gym/games/sudoku.py:102, 180-189, 241-245, 264-267", '''\
reasoning = f"Based on the current board, row {row+1} is missing {sorted(row_missing)}, column {col+1} is missing {sorted(col_missing)}, and the 3x3 box is {sorted(box_missing)}. Taking the intersection of these sets, the possible values for cell ({row+1},{col+1}) are {candidates}."
f"Looking at the cell at ({cur.row+1},{cur.col+1}). " f"{cur.reasoning} " f"Wait, we are stuck at cell ({cur.row+1},{cur.col+1}). There are no possible values for this cell. I need to go back to one of previous cells."
f"Back at ({node.row+1},{node.col+1}); erase {wrong_digit}. The current board is:\\n{self._board_to_string(temp_board)}"
f"Out of all the possible values {node.candidates} for cell ({node.row+1},{node.col+1}), I tried {wrong_digits}. Let me try to fill the cell with {correct}."
lines += "\\n</think>\\n\\n"; lines += "<answer>\\n"; lines += solution_str; lines += "\\n</answer>"'''),
    "arc_1d": ("reasoning-gym/reasoning_gym/arc/arc_1d.py:84-86, 112", '''\
template1 = "{instruction} Applying this rule to the test input, we get the output grid:\\n"
template2 = "The outputs match the given example output. Let's apply this rule to the test input and obtain the answer.\\n</think>\\n\\n<answer>{answer}</answer>"
template3 = "The outputs do not match the given example outputs. Let's try to find another pattern.\\n\\n"
optimal_trajectory = "Looking at these three examples. " + optimal'''),
    "advanced_geometry": ("reasoning-gym/reasoning_gym/geometry/advanced_geometry.py:186-190, 206, 229-230", '''\
reasoning_steps.append(f"I have obtained the answer {ortho_str}. Let's double check it.")
reasoning_steps.append(f"Let's first check if I have calculated the line from point B({original_B.x}, {original_B.y}) to point C({original_C.x}, {original_C.y}) correctly.")
reasoning += f" Oh, I made a mistake here, and {ortho_str} is not the correct answer. Let's try to recalculate the line from B to C, and obtain a new answer following the same steps as before."
optimal_reasoning = optimal_reasoning + "\\n" + "</think>\\n\\n" + "<answer>\\n" + answer_str + "\\n</answer>"'''),
}
tmp = pathlib.Path(tempfile.mkdtemp())
out = []


def block(text, lang=""):
    return f"```{lang}\n{text.rstrip()}\n```\n"


def run(argv):
    code = "import sys; from reasoning360.cli import main; sys.exit(main(['data', *sys.argv[1:]]))"
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout.replace(str(tmp) + "/", "")


def attempts_section(name, cfg):
    """A k=0 trace and an attempt of the same problem (RL-only: an attempt), and the measured
    share of right attempts; returns the markdown and a table row."""
    t = get_task(name)
    d = tmp / f"{name}-attempts"
    split = "sft" if cfg["backtrack_sft"] else "train"
    sizes = {"sft": "0", "train": "0", "val": "0", "test": "0"}
    sizes[split] = ATTEMPT_PROBLEMS
    argv = [name, *(["--backtracks", "0"] if cfg["backtrack_sft"] else []),
            *[x for s_, n in sizes.items() for x in (f"--{s_}_size", n)], "--attempts", "1",
            "--scale", "cpu", "--seed", "0", "--local_dir", str(d)]
    printed = run(argv)
    rows = load_rows(d / "pretrain.parquet")
    scores = [score(name, r["response"], r["reward_model"]["ground_truth"]) for r in rows]
    assert min(scores) > 0 and not any(count_backtracks(name, r["response"]) for r in rows)
    right = scores.count(1.0) / len(scores)
    longest = max(len(r["prompt"][0]["content"]) + len(r["response"]) for r in rows)
    lengths = [len(r["response"]) for r in rows]
    md = ("\nAttempts without search, the pretraining corpus of the scale=cpu base model "
          "([what it saw](#what-the-scalecpu-base-model-saw)):\n\n"
          + block("$ r360 data " + " ".join(argv).replace(str(tmp) + "/", "") + "\n" + printed, "console"))
    row = rows[0]
    md += "\nPrompt (`compact` template):\n\n" + block(row["prompt"][0]["content"], "text")
    if cfg["backtrack_sft"]:
        trace = load_rows(d / "sft.parquet")[0]["response"]
        md += "\nThe k = 0 trace of this problem (reward 1.0):\n\n" + block(trace, "text")
    md += (f"\nAn attempt (reward {scores[0]}: {'right' if scores[0] == 1.0 else 'wrong'}):\n\n"
           + block(row["response"], "text"))
    table = (f"| {name} | {split} | {right:.1%} | {sum(lengths) / len(lengths):.0f} / {max(lengths)} | "
             f"{longest} | {DRAWN[name]} |")
    return md, table


table_rows = []
for name in TASKS:
    cfg = yaml.safe_load(open(f"configs/task/{name}.yaml"))
    t = get_task(name)
    out.append(f"## {name}\n")
    desc = (sys.modules[t.__class__.__module__].__doc__ or "").strip().split("\n\n")[0]
    out.append(" ".join(desc.split()) + "\n")
    kv = cfg["k_values"] if cfg["backtrack_sft"] else None
    out.append(f"- backtrack SFT: **{'yes' if cfg['backtrack_sft'] else 'no (RL only)'}**"
               + (f"; k grid: {kv}" if cfg["backtrack_sft"] else "") + "\n"
               f"- params: cpu `{cfg['params']['cpu']}`, paper `{cfg['params']['paper']}`\n"
               + (f"- max_k: cpu {t.max_k(cfg['params']['cpu'])}, paper {t.max_k(cfg['params']['paper'])}\n"
                  if cfg["backtrack_sft"] else ""))
    if cfg["backtrack_sft"]:
        for style, scale, template in (("compact", "cpu", "compact"), ("paper", "paper", "qwen-instruct")):
            d = tmp / f"{name}-{style}"
            argv = [name, "--backtracks", "1", *SIZES, "--scale", scale, "--template_type", template,
                    "--trace_style", style, "--seed", "0", "--local_dir", str(d)]
            printed = run(argv)
            out.append(f"\n`{style}` style, scale={scale}:\n\n"
                       + block("$ r360 data " + " ".join(argv).replace(str(tmp) + "/", "") + "\n" + printed, "console"))
            row = load_rows(d / "sft.parquet")[0]
            assert score(name, row["response"], row["reward_model"]["ground_truth"]) == 1.0
            assert count_backtracks(name, row["response"]) == 1
            prompt = row["prompt"][0]["content"]
            out.append(f"\nPrompt (`{template}` template, the whole text the model reads):\n\n" + block(prompt, "text"))
            what = "continuing the prompt's `<think>`" if template != "compact" else "the whole assistant turn"
            out.append(f"\nResponse (k = 1, `{style}`, {what}; reward 1.0):\n\n" + block(row["response"], "text"))
        md, row = attempts_section(name, cfg)
        out.append(md)
        table_rows.append(row)
        if name in THEIRS:
            where, code = THEIRS[name]
            out.append(f"\nThe authors' generator writes the same sentences ({SRC}, `{where}`):\n\n"
                       + block(code, "python"))
        else:
            out.append("\nNot one of the authors' tasks: the `paper` wording is ours, in the spirit of theirs.\n")
    else:
        d = tmp / name
        argv = [name, *SIZES, "--seed", "0", "--local_dir", str(d)]
        printed = run(argv)
        out.append("\n" + block("$ r360 data " + " ".join(argv).replace(str(tmp) + "/", "") + "\n" + printed, "console"))
        row = load_rows(d / "train.parquet")[0]
        out.append("\nPrompt (`compact` template):\n\n" + block(row["prompt"][0]["content"], "text"))
        p = get_task(name).generate(1, 0, cfg["params"]["cpu"])[0]
        out.append("\nPrompt (`qwen-instruct` template):\n\n" + block(get_task(name).prompt(p, "qwen-instruct").text, "text"))
        out.append(f"\nReference answer: `{row['extra_info']['answer']}`\n")
        md, trow = attempts_section(name, cfg)
        out.append(md)
        table_rows.append(trow)
    out.append("\n")
head = open("docs/tools/tasks_head.md").read()
max_len = yaml.safe_load(open("configs/sft/default.yaml"))["max_len"]
table = ("| task | problems | right | attempt chars mean / max | longest prompt + attempt | an attempt draws |\n"
         "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(table_rows) + "\n\n"
         f"(`sft.max_len` is {max_len} characters: some compact prompts of zebra_puzzles and gsm_symbolic and "
         "every one of self_reference are longer than that on their own, so a base for them needs a longer one.)")
assert "<!-- attempts-table -->" in head
head = head.replace("<!-- attempts-table -->", table)
pathlib.Path("docs/tasks.md").write_text(re.sub(r"\n{3,}", "\n\n", head + "\n".join(out)).rstrip() + "\n")
print("ok")
