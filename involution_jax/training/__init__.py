"""Training: the loop and everything it stands on.

trainer       `train_and_evaluate(config, workdir)`: the loop, checkpoints, logs
step          the pure training step (loss, gradients, optimiser, half precision)
evaluator     the evaluation step and `evaluate_weights`
resume        which checkpoint a run resumes from, damaged ones set aside
sharding      the device mesh and how arrays are laid out on it
distributed   several processes as one run
preflight     the dry run: lower or compile the steps, check the data, report memory
curves        the run's history (history.jsonl) and its pictures
"""
