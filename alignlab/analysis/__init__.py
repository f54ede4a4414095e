"""See inside a model: weight deltas and effective rank, residual-stream statistics, attention per
head, memorisation capacity and memory per phase (`alignlab analyze ...`), and the HTML report."""
