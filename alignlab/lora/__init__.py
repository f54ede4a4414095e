"""Beyond plain LoRA (docs/lora.md).

- `relora`: ReLoRA's reset (merge s·B·A into the fp32 base, re-draw A, zero B), optimizer-state
  magnitude pruning, the jagged cosine schedule;
- `rank1`: dynamic rank-1 merging (a fresh rank-1 adapter every k steps, Gaussian or greedy a);
- `cycles`: what both share: the LoRA layers of a model, fp32 master weights, checkpoints whose root
  is the merged model and whose `lora_cycle/` holds what an exact resume needs;
- `actions`: the step-end actions `tracking.Run.end_step` runs for every loop (these two and the
  effective-rank tracker of `analysis.rank_every`);
- `blend`: `alignlab blend`, combining LoRA adapters on their weight deltas.
"""
