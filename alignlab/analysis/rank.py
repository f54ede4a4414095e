"""Effective-rank measures of a matrix (typically a weight update ΔW = W_tuned − W_base).

Pure torch; each function takes either a matrix or its singular values (`*_from_sv`). Definitions
(research note lora-analysis-decoding.md §2.3), σ₁ ≥ … ≥ σ_n ≥ 0:

- Roy–Vetterli entropy effective rank (EUSIPCO 2007): p_i = σ_i / Σσ_j (singular values, not
  squares), erank = exp(−Σ p_i ln p_i), in [1, rank]; 0 for the zero matrix.
- stable rank: Σσ_i² / σ₁², in [1, rank]; 0 for the zero matrix.
- k90: the smallest k whose top-k singular values hold ≥ 90 % of the *energy* Σσ_i² (squared).
- numerical rank: #{σ_i > tol}, tol = max(out, in)·eps(dtype)·σ₁ (torch.linalg.matrix_rank's default).
  For a difference of two stored matrices pass `noise_scale` (e.g. ‖W₀‖_F): their rounding
  (eps·|W|, not eps·|ΔW|) is then the floor, so it is not counted as rank.
"""
from __future__ import annotations

import torch


def singular_values(mat: torch.Tensor) -> torch.Tensor:
    """σ (descending) of a 2-D tensor, computed in float64 on CPU (ΔW is small next to W: precision matters)."""
    if mat.dim() != 2:
        raise ValueError(f"expected a matrix, got shape {tuple(mat.shape)}")
    return torch.linalg.svdvals(mat.detach().to("cpu", torch.float64))


def erank_from_sv(sv: torch.Tensor) -> float:
    """exp(entropy of σ/Σσ); 0 when every σ is 0."""
    sv = sv.clamp(min=0).double()
    total = sv.sum()
    if total <= 0:
        return 0.0
    p = sv / total
    p = p[p > 0]  # 0·ln 0 = 0
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank_from_sv(sv: torch.Tensor) -> float:
    """Σσ² / σ₁² = ‖A‖_F² / ‖A‖₂²; 0 for the zero matrix."""
    sv = sv.double()
    top = sv.max() if sv.numel() else sv.new_zeros(())
    if top <= 0:
        return 0.0
    return float((sv ** 2).sum() / top ** 2)


def energy_rank_from_sv(sv: torch.Tensor, frac: float = 0.9) -> int:
    """Smallest k with Σ_{i≤k} σ_i² ≥ frac · Σ σ_i² (energy = squared singular values); 0 for zero."""
    e = torch.sort(sv.double() ** 2, descending=True).values
    total = e.sum()
    if total <= 0:
        return 0
    cum = torch.cumsum(e, 0)
    # a relative slack so that frac=1.0 is reachable despite rounding in the cumulative sum
    return int((cum < frac * total * (1 - 1e-12)).sum().item()) + 1


def numerical_rank_from_sv(sv: torch.Tensor, shape: tuple[int, int], dtype: torch.dtype = torch.float32,
                           noise_scale: float = 0.0) -> int:
    """#{σ > max(shape)·eps(dtype)·max(σ₁, noise_scale)}: the eps of the dtype the matrix was stored in."""
    if sv.numel() == 0 or sv.max() <= 0:
        return 0
    tol = max(shape) * torch.finfo(dtype).eps * max(float(sv.max()), noise_scale)
    return int((sv > tol).sum().item())


def rank_measures(mat: torch.Tensor, noise_scale: float = 0.0, dtype: torch.dtype | None = None) -> dict[str, float]:
    """All four measures of one matrix, raw and normalised by n = min(out, in). `dtype`: the storage
    dtype for the numerical-rank tolerance (default: mat's); `noise_scale`: see numerical_rank_from_sv."""
    sv = singular_values(mat)
    n = min(mat.shape)
    out = {
        "erank": erank_from_sv(sv),
        "stable_rank": stable_rank_from_sv(sv),
        "k90": energy_rank_from_sv(sv, 0.9),
        "numerical_rank": numerical_rank_from_sv(
            sv, tuple(mat.shape), dtype or (mat.dtype if mat.is_floating_point() else torch.float32), noise_scale),
        "n": n,
    }
    out["erank_frac"] = out["erank"] / n if n else 0.0
    return out
