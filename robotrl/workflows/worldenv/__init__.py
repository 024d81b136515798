"""World-Env workflows (``robotrl worldenv collect | train-vla | train-model | train-reflector | post-train |
fidelity``): every stage reads and writes under one output directory and resumes from what is there."""
