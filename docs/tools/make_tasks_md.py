"""Generates docs/tasks.md by running `r360 data` for every task (run from the repo root)."""
import subprocess, sys, tempfile, pathlib, yaml, textwrap
from reasoning360.tasks import load_rows, get_task, score, count_backtracks

TASKS = ["countdown", "sudoku", "arc_1d", "advanced_geometry", "knights_knaves",
         "color_cube_rotation", "list_functions", "zebra_puzzles", "self_reference", "gsm_symbolic"]
SIZES = ["--sft_size", "8", "--train_size", "8", "--val_size", "2", "--test_size", "4"]
tmp = pathlib.Path(tempfile.mkdtemp())
out = []
def block(text, lang=""):
    return f"```{lang}\n{text.rstrip()}\n```\n"
def run(argv):
    p = subprocess.run(["r360", "data", *argv], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout.replace(str(tmp) + "/", "")
for name in TASKS:
    cfg = yaml.safe_load(open(f"configs/task/{name}.yaml"))
    t = get_task(name)
    out.append(f"## {name}\n")
    desc = (t.__class__.__module__ and sys.modules[t.__class__.__module__].__doc__ or "").strip().split("\n\n")[0]
    out.append(" ".join(desc.split()) + "\n")
    kv = cfg["k_values"]
    out.append(f"- backtrack SFT: **{'yes' if cfg['backtrack_sft'] else 'no (RL only)'}**"
               + (f"; k grid: {kv}" if cfg["backtrack_sft"] else "") + "\n"
               f"- params: cpu `{cfg['params']['cpu']}`, paper `{cfg['params']['paper']}`\n"
               + (f"- max_k: cpu {t.max_k(cfg['params']['cpu'])}, paper {t.max_k(cfg['params']['paper'])}\n" if cfg["backtrack_sft"] else ""))
    if cfg["backtrack_sft"]:
        for style in ("compact", "paper"):
            d = tmp / f"{name}-{style}"
            argv = [name, "--backtracks", "1", *SIZES, "--template_type", "compact" if style == "compact" else "qwen-instruct",
                    "--trace_style", style, "--seed", "0", "--local_dir", str(d)]
            printed = run(argv)
            out.append(f"\n`{style}` style:\n\n" + block("$ r360 data " + " ".join(argv).replace(str(tmp) + "/", "") + "\n" + printed, "console"))
            row = load_rows(d / "sft.parquet")[0]
            assert score(name, row["response"], row["reward_model"]["ground_truth"]) == 1.0
            assert count_backtracks(name, row["response"]) == 1
            prompt = row["prompt"][-1]["content"]
            out.append(f"\nPrompt (`{'compact' if style == 'compact' else 'qwen-instruct'}` template, user turn):\n\n" + block(prompt, "text"))
            out.append(f"\nTrace (k = 1, `{style}`; reward 1.0):\n\n" + block(row["response"], "text"))
    else:
        d = tmp / name
        argv = [name, *SIZES, "--seed", "0", "--local_dir", str(d)]
        printed = run(argv)
        out.append("\n" + block("$ r360 data " + " ".join(argv).replace(str(tmp) + "/", "") + "\n" + printed, "console"))
        row = load_rows(d / "train.parquet")[0]
        out.append("\nPrompt (`compact` template):\n\n" + block(row["prompt"][-1]["content"], "text"))
        out.append(f"\nReference answer: `{row['extra_info']['answer']}`\n")
    out.append("\n")
head = open("docs/tools/tasks_head.md").read()
import re; pathlib.Path("docs/tasks.md").write_text(re.sub(r"\n{3,}", "\n\n", head + "\n".join(out)).rstrip() + "\n")
print("ok")
