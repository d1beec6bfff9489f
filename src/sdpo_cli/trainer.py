"""Test-time SDPO on one problem, top to bottom (the paper's Sec. 5 procedure, with LoRA).

    for event in sdpo(problem, cfg, session, run):   # Start, one Step per step, then Done
        ...

Each step: sample G attempts with the current adapter -> verify them -> if one passes, stop ->
otherwise one SDPO update (update.SDPOUpdater: each attempt's teacher prompt is the question plus its
own feedback, or a successful sibling as demonstration; the teacher re-scores the student's exact
sampled tokens under no grad; reverse KL over the student's top-K + tail; one AdamW step on the LoRA
weights; EMA teacher update) -> checkpoint. The first passing attempt's number is the discovery index.

Departures from the paper, and why:
  * LoRA (rank 16, lr 1e-4) instead of full fine-tuning at lr 1e-6: an 8B model fits one GPU beside
    its EMA teacher, which is a second adapter on the same base; LoRA needs a ~10x larger lr.
  * G = 8 attempts per step on CPU (16 on GPU, as the paper): the paper's batch-size ablation
    (Fig. 19 left) finds 8 as good for early discoveries.
  * How the update batches sequences and bounds memory is documented in update.py.

This module loads nothing and renders nothing: the session (session.py) holds the model, the runner
(runner.py) claims the run directory, render.py shows the events; run files go through `runs.RunDir`
and the bookkeeping every method shares through `attempt.py`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from .attempt import Attempt, attempt_batch, batch_seed, batch_stats, mark_interrupted, summary, write_solution
from .events import Done, JobKey, Start, Step
from .runs import RunDir
from .sampling import SamplingParams

METHOD = "sdpo"
WARN_SHORT_TOKENS = 8  # median response length below this counts as collapse


def step_warnings(attempts: list[Attempt]) -> list[str]:
    """Warnings for a failed step whose attempts collapsed or all failed the same way (nothing to learn)."""
    if any(a.passed for a in attempts):
        return []  # a solved step has nothing to warn about
    warns = []
    lengths = sorted(len(a.completion.token_ids) for a in attempts)
    if lengths and lengths[len(lengths) // 2] < WARN_SHORT_TOKENS:
        warns.append(f"responses collapsed: median length {lengths[len(lengths) // 2]} tokens")
    if len(attempts) > 1 and len({a.completion.text for a in attempts}) == 1:
        warns.append("responses collapsed: all attempts are identical")
    statuses = {a.verdict.status for a in attempts}
    if len(attempts) > 1 and len(statuses) == 1 and next(iter(statuses)) != "wrong_answer":
        s = next(iter(statuses)).replace("_", " ")
        warns.append(f"all {len(attempts)} attempts failed the same way ({s}); check the limits/prompt")
    elif len(attempts) > 1 and len({a.verdict.feedback for a in attempts}) == 1:
        warns.append(f"all {len(attempts)} attempts got identical feedback; the teacher signal is weak")
    return warns


def sdpo(problem, cfg, session, run: RunDir, *, resume: bool = False) -> Iterator:
    """Run (or resume) test-time SDPO on `problem`, writing `run`.

    Args:
        problem: the Problem.
        cfg: the job's resolved SolveConfig (its seed is this run's seed).
        session: the loaded model, tokenizer and backend (session.Session).
        run: the run directory (claimed by the runner).
        resume: continue from the run's last checkpoint (a cut-short step is rolled back and redone).

    Yields:
        events.Start, one events.Step per step, then events.Done (the summary).
    """
    from .model import encode_chat
    from .update import SDPOUpdater

    job = JobKey(problem.id, METHOD, cfg.seed)
    with session.lora(cfg) as model:
        prompt_ids = encode_chat(session.tokenizer, problem.messages())
        ck, step, used, best, wall = run.start_point(resume)
        sampler = session.sampler(model, attempts_done=used, checkpoint=ck)
        updater = SDPOUpdater(model, session.tokenizer, cfg, rollout_correction=sampler.rollout_correction)
        if ck:
            updater.load(run.state_dir(ck["step"]))
        sampler_state = {k: ck[k] for k in ("adapter_dir",) if ck and k in ck}
        winner, solved_at = None, None
        yield Start(job, str(run.path), cfg.budget, used, step, cfg.batch_size, problem.n_tests, bool(ck))
        try:
            while used < cfg.budget:
                t_step = time.perf_counter()
                n = min(cfg.batch_size, cfg.budget - used)
                params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p,
                                        max_new_tokens=cfg.max_new_tokens, seed=batch_seed(METHOD, cfg.seed, step))
                attempts, t_sample, t_verify = attempt_batch(sampler, problem, prompt_ids, n, params, step=step,
                                                             first_number=used + 1)
                run.append_attempts([a.record() for a in attempts])
                stats = batch_stats(attempts)
                best = max(best, stats["best_passed"])
                winner = next((a for a in attempts if a.passed), None)
                rec = {"step": step, "attempts_used": used + n, **stats, "best_so_far": best,
                       "n_tests": problem.n_tests, "time_sample_s": t_sample, "time_verify_s": t_verify,
                       "warnings": step_warnings(attempts)}
                if winner is None:
                    rec.update(updater.update(problem, prompt_ids, attempts))
                    sampler_state = sampler.after_update(model, run.path / "adapters" / f"step-{step}")
                    updater.save(run.state_dir(step))
                rec["time_step_s"] = time.perf_counter() - t_step
                wall += rec["time_step_s"]
                used += n
                run.append_step(rec)
                if winner is None:
                    # The winning step is not committed: a crash before summary.json redoes it (same seed).
                    run.commit_step(step, {"attempts_used": used, "best_passed": best, "wall_s": wall,
                                           **sampler_state})
                yield Step(job, rec, cfg.budget)
                if winner is not None:
                    solved_at = winner.number
                    break
                step += 1
        except (KeyboardInterrupt, GeneratorExit):
            mark_interrupted(run, problem, cfg, METHOD)
            raise
        if winner is not None:
            write_solution(run, problem, winner)
        from .model import save_adapter

        save_adapter(model, run.path / "adapter")
        result = summary(problem, cfg, run, METHOD, "solved" if winner else "exhausted", solved_at=solved_at,
                         used=used, best=best, wall=wall)
        run.write_summary(result)
        yield Done(job, result)
