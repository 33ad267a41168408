"""Loss weighting strategies: a dict of named scalar losses in, one weighted scalar out.

Every strategy is a ``torch.nn.Module`` so that its learnable weights travel with
``state_dict()`` and ``.to(device)``. Put ``weighting.parameters()`` in the optimiser, in a
parameter group without weight decay (decay would pull log sigma^2 towards 0 for no reason).

Uncertainty weighting (Kendall et al.; Tian et al. for the regulariser and the grouping), per
group g of tasks sharing one sigma_g:

    L_total = sum_g [ sum_{t in g} L_t / (k_t * sigma_g^2) + log sigma_g + lam * |sigma_g - 1| ]

with k_t = 1 for "cls" tasks and 2 for "reg" tasks. ULWF is one task per group and lam = 0,
RULWF one task per group and lam > 0, GALW slope-derived groups and lam > 0.
"""

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

KIND_FACTORS: dict[str, float] = {"cls": 1.0, "reg": 2.0}


def check_kinds(tasks: Sequence[str], kinds: Mapping[str, str]) -> None:
    """Raise ValueError unless every task has a kind among KIND_FACTORS."""
    for task in tasks:
        if task not in kinds:
            raise ValueError(f"no kind given for task {task!r}")
        if kinds[task] not in KIND_FACTORS:
            raise ValueError(
                f"task {task!r} has kind {kinds[task]!r}; expected one of {sorted(KIND_FACTORS)}"
            )


def check_partition(groups: Sequence[Sequence[str]], tasks: Sequence[str] | None = None) -> None:
    """Raise ValueError unless ``groups`` are non-empty, disjoint and (if given) cover ``tasks``."""
    if not groups:
        raise ValueError("at least one group is needed")
    seen: set[str] = set()
    for group in groups:
        if not group:
            raise ValueError("groups must not be empty")
        for task in group:
            if task in seen:
                raise ValueError(f"task {task!r} is in more than one group")
            seen.add(task)
    if tasks is not None and seen != set(tasks):
        missing, extra = sorted(set(tasks) - seen), sorted(seen - set(tasks))
        raise ValueError(f"groups do not partition the tasks: missing {missing}, unknown {extra}")


class LossWeighting(nn.Module):
    """Base class: ``forward(losses)`` returns the weighted total of the named losses."""

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        if len(set(tasks)) != len(tasks) or not tasks:
            raise ValueError(f"tasks must be a non-empty list of distinct names, got {tasks!r}")
        self.tasks: tuple[str, ...] = tuple(tasks)

    def stack_losses(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The losses as a float32 vector in ``self.tasks`` order, after checking the names."""
        if set(losses) != set(self.tasks):
            missing, extra = (
                sorted(set(self.tasks) - set(losses)),
                sorted(set(losses) - set(self.tasks)),
            )
            raise KeyError(f"loss names do not match the tasks: missing {missing}, unknown {extra}")
        values = []
        for task in self.tasks:
            loss = losses[task]
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise ValueError(f"loss {task!r} must be a scalar tensor")
            # float32 so that half-precision losses under autocast do not lose the small weights
            values.append(loss.reshape(()).float())
        return torch.stack(values)

    def weights(self) -> dict[str, float]:
        """The current effective weight of each task's loss (the factor it is multiplied by)."""
        raise NotImplementedError

    def sigmas(self) -> dict[str, float]:
        """The current sigma of each group (empty for strategies without sigmas)."""
        return {}


class FixedWeighting(LossWeighting):
    """A constant weight per task: ``sum_t w_t * L_t``."""

    factors: Tensor  # a buffer: saved with the state dict, moved by .to()

    def __init__(self, weights: Mapping[str, float]) -> None:
        super().__init__(list(weights))
        self.register_buffer("factors", torch.tensor([float(w) for w in weights.values()]))

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        return (self.stack_losses(losses) * self.factors).sum()

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.factors.tolist(), strict=True))


class GroupedUncertainty(LossWeighting):
    """Uncertainty weighting with one learnable sigma per group of tasks (init sigma = 1).

    The parameter is ``log_var[g] = log sigma_g^2`` (unconstrained, and the weight
    ``exp(-log_var)`` never divides by zero); the value of the loss is exactly the formula in
    the module docstring, and ``sigmas()`` reports sigma itself. ``lam = 0`` gives ULWF-style
    groups. At sigma = 1, |sigma - 1| takes the subgradient 0 (torch's ``abs``).
    """

    group_index: Tensor  # buffers: task -> group, and k_t per task
    kind_factors: Tensor

    def __init__(
        self, groups: Sequence[Sequence[str]], kinds: Mapping[str, str], lam: float = 1.0
    ) -> None:
        check_partition(groups)
        tasks = [task for group in groups for task in group]
        super().__init__(tasks)
        check_kinds(tasks, kinds)
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        self.lam = float(lam)
        self.groups: list[list[str]] = [list(group) for group in groups]
        self.group_names: list[str] = ["+".join(group) for group in groups]
        self.kinds: dict[str, str] = {task: kinds[task] for task in tasks}
        group_of_task = [g for g, group in enumerate(groups) for _ in group]
        self.register_buffer("group_index", torch.tensor(group_of_task, dtype=torch.long))
        self.register_buffer("kind_factors", torch.tensor([KIND_FACTORS[kinds[t]] for t in tasks]))
        self.log_var = nn.Parameter(torch.zeros(len(groups)))

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        scaled = self.stack_losses(losses) / self.kind_factors
        per_group = torch.zeros_like(self.log_var).index_add(0, self.group_index, scaled)
        # log sigma = log_var / 2, sigma = exp(log_var / 2)
        total = per_group * torch.exp(-self.log_var) + 0.5 * self.log_var
        if self.lam > 0:
            total = total + self.lam * torch.abs(torch.exp(0.5 * self.log_var) - 1.0)
        return total.sum()

    def sigma_values(self) -> Tensor:
        """Sigma of each group, detached, in ``self.groups`` order."""
        return torch.exp(0.5 * self.log_var.detach())

    def sigmas(self) -> dict[str, float]:
        return dict(zip(self.group_names, self.sigma_values().tolist(), strict=True))

    def weights(self) -> dict[str, float]:
        inverse_var = torch.exp(-self.log_var.detach())[self.group_index] / self.kind_factors
        return dict(zip(self.tasks, inverse_var.tolist(), strict=True))

    def extra_repr(self) -> str:
        return f"groups={self.groups}, lam={self.lam}"


class ULWF(GroupedUncertainty):
    """Kendall et al.'s uncertainty weighting: one sigma per task, no regulariser."""

    def __init__(self, tasks: Sequence[str], kinds: Mapping[str, str]) -> None:
        super().__init__([[task] for task in tasks], kinds, lam=0.0)


class RULWF(GroupedUncertainty):
    """Uncertainty weighting with the ``lam * |sigma - 1|`` regulariser, one sigma per task."""

    def __init__(self, tasks: Sequence[str], kinds: Mapping[str, str], lam: float = 1.0) -> None:
        super().__init__([[task] for task in tasks], kinds, lam=lam)


WEIGHTING_NAMES = ("fixed", "ulwf", "rulwf", "galw")


def build_weighting(
    name: str,
    tasks: Sequence[str],
    kinds: Mapping[str, str],
    groups: Sequence[Sequence[str]] | None = None,
    lam: float = 1.0,
    fixed: Mapping[str, float] | None = None,
) -> LossWeighting:
    """Build a strategy by name.

    - ``fixed``: ``fixed`` weights (every task 1.0 when not given);
    - ``ulwf`` / ``rulwf``: one sigma per task, or per group when ``groups`` is given
      (the paper's "ULWF + grouping" baseline is ``ulwf`` with groups);
    - ``galw``: grouped RULWF; ``groups`` is required.
    ``groups`` must partition ``tasks``.
    """
    if name not in WEIGHTING_NAMES:
        raise ValueError(f"unknown weighting {name!r}; expected one of {WEIGHTING_NAMES}")
    if name == "fixed":
        weights = dict(fixed) if fixed is not None else dict.fromkeys(tasks, 1.0)
        if set(weights) != set(tasks):
            raise ValueError(f"fixed weights must name exactly the tasks {list(tasks)}")
        return FixedWeighting({task: weights[task] for task in tasks})
    if name == "galw" and groups is None:
        raise ValueError("the galw weighting needs groups (from galw.grouping)")
    if groups is None:
        groups = [[task] for task in tasks]
    check_partition(groups, tasks)
    return GroupedUncertainty(groups, kinds, lam=0.0 if name == "ulwf" else lam)
