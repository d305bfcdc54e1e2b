"""Cost-aware draft width: the verify width of the whole batch, chosen every step.

SGLang verifies one width per batch (``w`` tree nodes per request, root included; ``w = 1`` means no
drafts: the step is a plain decode). A wider tree can commit more tokens per step, but a verify step
costs more the more tokens it verifies. The policy picks, each step, the width from a small set that
maximises expected committed tokens per second:

    gain(w)  = sum over requests of (1 + sum of P(accept) of its best w - 1 draft nodes)
    cost(w)  = predicted seconds of a verify step of this batch size at width w
    choose     argmax_w gain(w) / cost(w)

Terms:

- *score*: the drafter's estimate that a draft node is accepted (its path score, in [0, 1]); the
  drafter takes nodes best-first, so the best ``w - 1`` nodes of a request are its first ``w - 1``
  candidates;
- *calibration*: scores are turned into acceptance probabilities from verify outcomes. Scores fall
  into fixed bins; each bin counts nodes proposed and nodes accepted (decayed, so the estimate
  follows the workload), shrunk towards the raw score by ``prior_weight`` pseudo-observations (bins
  never proposed are optimistic, so they get tried);
- *cost model*: step seconds = a + b * batch + c * batch * (w - 1) + (d + e * (w - 1)) * keys / 1e3
  + f * [w > 1], fitted with non-negative coefficients over the last steps' measured times (a step's time runs
  from its start to the next step's start: scheduling, drafting and verifying); the width terms
  from the differences between neighbouring steps, so that what drifts during a run (the host's
  speed, the batch, the context) is not credited to the width (``CostModel``), and a width's extra
  cost taken one standard error above its estimate (``caution``). The policy starts
  at w = 1 and learns wider widths' costs by trying them one width up at a time on a few steps
  (``WidthPolicy``); widths not measured yet are predicted to cost in proportion to the tokens
  they verify, so a wide, expensive step is never taken on the assumption that it is cheap.

Pure Python and NumPy: no SGLang import.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from sgl_consensus.drafting.core import rank_weight_sums

SCORE_BINS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0000001)
_EDGES = np.asarray(SCORE_BINS)
_LAST_BIN = len(SCORE_BINS) - 2
# For `Calibration.rank_weights`: 0.0 gets a slot of its own (a node that is not there), every positive
# score the slot of its bin: searchsorted(_SLOT_EDGES, score, side="right") = 1 for 0.0, 0 below.
_SLOT_EDGES = np.concatenate([[0.0, np.nextafter(0.0, 1.0)], _EDGES[1:]])
_SLOT_BIN = np.concatenate([[0, 0], np.minimum(np.arange(len(SCORE_BINS) - 1), _LAST_BIN),
                            [_LAST_BIN]])  # the calibration bin of each slot >= 2


def score_bins(scores: np.ndarray) -> np.ndarray:
    """The calibration bin of every score (scores outside [0, 1] go to the end bins)."""
    return np.minimum(np.maximum(np.searchsorted(_EDGES, scores, side="right") - 1, 0), _LAST_BIN)


def width_set(max_width: int, allowed: Sequence[int] | None = None) -> tuple[int, ...]:
    """Powers of two up to ``max_width``, plus ``max_width`` itself (or ``allowed``, validated)."""
    if allowed is None:
        widths = {1, max_width}
        w = 2
        while w < max_width:
            widths.add(w)
            w *= 2
        return tuple(sorted(widths))
    widths = sorted(set(int(w) for w in allowed))
    if not widths or widths[0] < 1 or widths[-1] > max_width:
        raise ValueError(f"allowed widths must lie in [1, {max_width}], got {list(allowed)}")
    return tuple(widths)


@dataclass
class Calibration:
    """Score bin -> acceptance probability, from verify outcomes (see the module docstring)."""

    prior_weight: float = 4.0
    decay: float = 0.999  # per recorded step
    proposed: np.ndarray = field(default_factory=lambda: np.zeros(len(SCORE_BINS) - 1))
    accepted: np.ndarray = field(default_factory=lambda: np.zeros(len(SCORE_BINS) - 1))
    score_sum: np.ndarray = field(default_factory=lambda: np.zeros(len(SCORE_BINS) - 1))
    _weights: tuple | None = field(default=None, repr=False)  # `rank_weights`, rebuilt in `record`

    @staticmethod
    def bin_of(score: float) -> int:
        return min(max(bisect.bisect_right(SCORE_BINS, score) - 1, 0), len(SCORE_BINS) - 2)

    def probability(self, score: float) -> float:
        b = self.bin_of(score)
        k = self.prior_weight
        return (self.accepted[b] + k * score) / (self.proposed[b] + k)

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """``probability`` of every entry of an array of scores."""
        bins = score_bins(scores)
        k = self.prior_weight
        return (self.accepted[bins] + k * scores) / (self.proposed[bins] + k)

    def rank_sums(self, scores: np.ndarray) -> np.ndarray:
        """Per column of ``scores`` ([batch, ranks], 0.0 where a request has no such node), the sum
        of the acceptance probabilities of its positive scores (`rank_weight_sums` of
        `rank_weights`: equal to ``probability`` up to rounding)."""
        return rank_weight_sums(scores, self.rank_weights())

    def rank_weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``probability`` as a piecewise-linear weight (edges, intercepts, slopes), 0 for a score of
        0.0 (a node that is not there): ``a[bin] + b[bin] * score``. Rebuilt when the calibration
        changes (in `record`, after the verify's launch); the drafter sums it per rank where it makes
        the scores (`ConsensusDrafter.propose_candidates`)."""
        if self._weights is None:
            self._weights = self._weight_tables()
        return self._weights

    def _weight_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self.prior_weight
        denominator = self.proposed + k
        a, b = self.accepted / denominator, k / denominator
        return (_SLOT_EDGES, np.concatenate([[0.0, 0.0], a[_SLOT_BIN[2:]]]),
                np.concatenate([[0.0, 0.0], b[_SLOT_BIN[2:]]]))

    def record(self, scores: Sequence[float], accepted: Sequence[bool]) -> None:
        self.proposed *= self.decay
        self.accepted *= self.decay
        self.score_sum *= self.decay
        values = np.asarray(scores, dtype=np.float64)
        bins = score_bins(values)
        size = len(SCORE_BINS) - 1
        self.proposed += np.bincount(bins, minlength=size)
        self.score_sum += np.bincount(bins, weights=values, minlength=size)
        self.accepted += np.bincount(bins, weights=np.asarray(accepted, dtype=np.float64), minlength=size)
        self._weights = self._weight_tables()  # here, off the drafting path, not at the next step

    def report(self) -> list[dict]:
        return [
            {"score_bin": [SCORE_BINS[i], min(SCORE_BINS[i + 1], 1.0)], "proposed": round(float(self.proposed[i]), 1),
             "accepted": round(float(self.accepted[i]), 1),
             "mean_score": round(float(self.score_sum[i] / self.proposed[i]), 4) if self.proposed[i] else None,
             "acceptance": round(float(self.accepted[i] / self.proposed[i]), 4) if self.proposed[i] else None}
            for i in range(len(SCORE_BINS) - 1)
        ]


def _nnls_scaled(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares with columns scaled to comparable sizes for the solver."""
    from scipy.optimize import nnls

    scale = np.maximum(np.abs(x).max(axis=0), 1e-9)
    solution, _ = nnls(x / scale, y)
    return solution / scale


class CostModel:
    """Verify-step seconds from (batch size, width, attended keys), refitted every ``refit_every``
    observations over the last ``window`` steps:

        seconds = a + b * batch + d * keys / 1e3                                  (a decode step)
                  + c * batch * (width - 1) + e * keys * (width - 1) / 1e3        (per draft token)
                  + f * [width > 1]                                               (drafting at all)

    all coefficients >= 0 (a step never gets cheaper with more requests, tokens or context). ``f`` is
    what a verify step costs beyond a decode step whatever its width (on CPU a width-1 step runs as
    a plain decode; the first draft token costs more than each further one).

    The width terms (c, e, f) decide the width, and a plain fit over the window can misplace them:
    the widths the policy takes drift with the run (width 1 while it learns, wider later) as the
    host's speed, the batch and the context drift too, so a fit over levels credits part of what the
    width cost to whatever drifted with it. So, once the window holds ``min_pairs`` *neighbouring*
    steps of different widths (a step that began as the one before it ended), the width terms come
    from the differences between neighbouring steps, where everything that drifts slowly cancels;
    a, b and d then come from the levels with the width terms taken out. Before that, all six come
    from the levels. The differences' residuals also give the standard error of the predicted extra
    cost of a width over width 1 (``extra_cost_error``), so the policy can ask for a margin while
    that cost is uncertain."""

    names = ("intercept", "per_request", "per_draft_token", "per_1k_keys", "per_1k_keys_x_draft_token",
             "per_drafting_step")
    _BASE = [0, 1, 3]  # the feature columns of a decode step
    _WIDTH = [2, 4, 5]  # the columns that grow with the width

    def __init__(self, window: int = 256, refit_every: int = 8, min_pairs: int = 4) -> None:
        self.window = window
        self.refit_every = refit_every
        self.min_pairs = min_pairs
        # The last `window` observations are rows [start, stop) of buffers twice that long, oldest
        # first (appends are in place; when the end is reached they move to the front at once).
        self._features = np.zeros((2 * window, len(self.names)))
        self._seconds = np.zeros(2 * window)
        self._follows = np.zeros(2 * window, dtype=bool)  # the step began as the row before it ended
        self._start = self._stop = 0
        self.theta = np.zeros(len(self.names))
        self.width_covariance: np.ndarray | None = None  # of (c, e, f), from neighbouring steps
        self.width_pairs = 0  # neighbouring steps of different widths in the last fit
        self.observations = 0
        self._fitted_floats()

    @staticmethod
    def features(batch: int, width: int, keys: int) -> np.ndarray:
        return np.array([1.0, batch, batch * (width - 1), keys / 1e3, keys * (width - 1) / 1e3, float(width > 1)])

    @staticmethod
    def _width_features(batch: int, widths: np.ndarray, keys: int) -> np.ndarray:
        """[len(widths), 3]: the width columns (c, e, f) at each width."""
        extra = np.asarray(widths, dtype=np.float64) - 1
        return np.stack([batch * extra, keys * extra / 1e3, (extra > 0).astype(np.float64)], axis=1)

    def predict(self, batch: int, width: int, keys: int) -> float:
        return float(self.features(batch, width, keys) @ self.theta)

    def predict_widths(self, batch: int, widths: np.ndarray, keys: int) -> np.ndarray:
        """``predict`` at every width of ``widths`` (one array operation)."""
        a, b, _, d, _, _ = self.theta
        return a + b * batch + d * keys / 1e3 + self._width_features(batch, widths, keys) @ self.theta[self._WIDTH]

    def extra_cost_error(self, batch: int, widths: np.ndarray, keys: int) -> np.ndarray:
        """Standard error of the predicted seconds a step at each width costs beyond width 1 (zeros
        while the width terms come from the levels: no neighbouring pairs to measure it by)."""
        if self.width_covariance is None:
            return np.zeros(len(widths))
        g = self._width_features(batch, widths, keys)
        return np.sqrt(np.maximum(np.einsum("wi,ij,wj->w", g, self.width_covariance, g), 0.0))

    def cautious_costs(self, batch: int, widths: Sequence[int], keys: int, caution: float) -> list[float]:
        """``predict_widths`` plus ``caution`` times ``extra_cost_error`` at each width, in plain
        floats: the policy asks this every step for a handful of widths, where numpy's per-call
        overhead would be most of the work."""
        a, b, c, d, e, f = self._theta
        thousands = keys / 1e3
        decode = a + b * batch + d * thousands
        per_draft_token = c * batch + e * thousands
        covariance = self._covariance if caution else None
        if covariance is not None:
            # The width features are (batch * extra, thousands * extra, 1): the variance is a
            # quadratic in extra, its three coefficients computed once for all widths.
            (c00, c01, c02), (c10, c11, c12), (c20, c21, c22) = covariance
            square = batch * batch * c00 + batch * thousands * (c01 + c10) + thousands * thousands * c11
            linear = batch * (c02 + c20) + thousands * (c12 + c21)
        costs = []
        for width in widths:
            extra = width - 1
            if extra <= 0:
                costs.append(decode)
                continue
            cost = decode + per_draft_token * extra + f
            if covariance is not None:
                variance = (square * extra + linear) * extra + c22
                cost += caution * math.sqrt(max(variance, 0.0))
            costs.append(cost)
        return costs

    def _fitted_floats(self) -> None:
        """The fit as Python floats for ``cautious_costs``."""
        self._theta = [float(v) for v in self.theta]
        self._covariance = None if self.width_covariance is None else self.width_covariance.tolist()

    def record(self, batch: int, width: int, keys: int, seconds: float, follows: bool = False) -> None:
        """One step's measured seconds; ``follows``: it began when the step recorded before it ended
        (no unrecorded step, such as a prefill, in between)."""
        if self._stop == len(self._seconds):
            held = self._stop - self._start
            self._features[:held] = self._features[self._start: self._stop]
            self._seconds[:held] = self._seconds[self._start: self._stop]
            self._follows[:held] = self._follows[self._start: self._stop]
            self._start, self._stop = 0, held
        self._features[self._stop] = self.features(batch, width, keys)
        self._seconds[self._stop] = seconds
        self._follows[self._stop] = follows
        self._stop += 1
        if self._stop - self._start > self.window:
            self._start += 1
        self.observations += 1
        if self.observations % self.refit_every == 0 or self.observations <= self.refit_every:
            self.refit()

    def refit(self) -> None:
        x = self._features[self._start: self._stop]
        seconds = self._seconds[self._start: self._stop]
        follows = self._follows[self._start: self._stop]
        later = np.flatnonzero(follows[1:]) + 1  # rows whose predecessor in the window is the step before
        width = x[:, 2] / np.maximum(x[:, 1], 1.0) + 1
        self.width_pairs = int(np.count_nonzero(width[later] != width[later - 1]))
        if self.width_pairs < self.min_pairs:  # too few neighbours of other widths: all six from the levels
            self.theta, self.width_covariance = _nnls_scaled(x, seconds), None
            self._fitted_floats()
            return
        dx = (x[later] - x[later - 1])[:, 1:]  # the intercept cancels
        dt = seconds[later] - seconds[later - 1]
        differenced = _nnls_scaled(dx, dt)
        width_terms = differenced[[c - 1 for c in self._WIDTH]]
        theta = np.zeros(len(self.names))
        theta[self._WIDTH] = width_terms
        theta[self._BASE] = _nnls_scaled(x[:, self._BASE], seconds - x[:, self._WIDTH] @ width_terms)
        self.theta = theta
        residual = dt - dx @ differenced
        variance = float(residual @ residual) / max(len(dt) - dx.shape[1], 1)
        covariance = variance * np.linalg.pinv(dx.T @ dx)
        columns = [c - 1 for c in self._WIDTH]
        self.width_covariance = covariance[np.ix_(columns, columns)]
        self._fitted_floats()

    def window_rows(self) -> list[list[float]]:
        """The observations the fit uses, oldest first: [batch, width, keys, seconds, follows]."""
        x = self._features[self._start: self._stop]
        batch = x[:, 1]
        width = np.where(batch > 0, x[:, 2] / np.maximum(batch, 1), 0) + 1
        return [[int(b), int(round(w)), int(round(k * 1e3)), round(float(t), 6), int(f)]
                for b, w, k, t, f in zip(batch, width, x[:, 3], self._seconds[self._start: self._stop],
                                         self._follows[self._start: self._stop])]


class WidthPolicy:
    """Chooses the batch's verify width each step; learns from each step's outcome.

    It starts at width 1 and learns the cost of wider steps by trying them, one width up at a time:
    every ``explore_every`` steps (``early_explore_every`` during the first ``early_steps``) the step
    takes a neighbour of the best width, the wider one while that is not yet measured. Beyond the
    widest width measured ``min_observations`` times, a step's cost is predicted to grow in
    proportion to the tokens it verifies (the pessimistic case of a compute-bound device), so an
    untried width is never chosen for being assumed cheap. A measured width's extra cost over
    width 1 is taken ``caution`` standard errors above its estimate (``CostModel``), so that where
    drafting gains less than the cost model can resolve, the step does not draft."""

    def __init__(self, widths: Sequence[int], explore_every: int = 32, early_explore_every: int = 8,
                 early_steps: int = 64, min_observations: int = 2, cycle: bool = False,
                 caution: float = 1.0) -> None:
        self.widths = tuple(sorted(widths))
        self.cycle = cycle  # diagnostic: every width in turn, one per step
        self.calibration = Calibration()
        self.cost = CostModel()
        self.explore_every = explore_every
        self.early_explore_every = early_explore_every
        self.early_steps = early_steps
        self.min_observations = min_observations
        self.caution = caution
        self.steps = 0
        self.histogram = dict.fromkeys(self.widths, 0)
        self.measured = dict.fromkeys(self.widths, 0)  # cost observations per width

    def predicted_cost(self, batch: int, width: int, keys: int) -> float:
        """Seconds of a verify step (see the class docstring for widths not measured yet)."""
        return self.predicted_costs(batch, keys)[width]

    def predicted_costs(self, batch: int, keys: int, caution: float = 0.0) -> dict[int, float]:
        """``predicted_cost`` of every allowed width, each width's extra cost over width 1 raised by
        ``caution`` standard errors."""
        known = [w for w in self.widths if self.measured[w] >= self.min_observations]
        if not known:
            return {w: float(w) for w in self.widths}
        reference = max(known)
        costs = [max(cost, 1e-6) for cost in self.cost.cautious_costs(batch, self.widths, keys, caution)]
        at_reference = costs[self.widths.index(reference)]
        return {w: cost if w <= reference else at_reference * w / reference for w, cost in zip(self.widths, costs)}

    def expected_tokens(self, scores: Sequence[Sequence[float]] | np.ndarray,
                        calibrations: Sequence[Calibration] | None = None,
                        rank_sums: np.ndarray | None = None) -> dict[int, float]:
        """Expected committed tokens of the batch at each width (bonus tokens included): per
        request 1 + the calibrated acceptance probabilities of its best ``w - 1`` nodes
        (``calibrations``: one per request, default this policy's). ``rank_sums``: this policy's
        per-rank sums already made by the drafter (`Calibration.rank_weights`), for the default."""
        longest = self.widths[-1] - 1
        columns = max(longest, 1)
        if rank_sums is not None and calibrations is None:
            return self._cumulative(len(scores), rank_sums[:longest].tolist())
        if isinstance(scores, np.ndarray):  # [batch, nodes], 0.0 past each request's candidates
            matrix = scores[:, :longest]  # a view: no copy of the batch's scores
            if matrix.shape[1] < columns:
                matrix = np.pad(matrix, ((0, 0), (0, columns - matrix.shape[1])))
        else:
            matrix = np.zeros((len(scores), columns))
            for row, request in enumerate(scores):
                taken = request[:longest]
                matrix[row, : len(taken)] = taken
        if calibrations is None:
            per_rank = self.calibration.rank_sums(matrix).tolist()  # the batch's k-th best nodes
        else:
            probability = np.vstack([c.probabilities(row) for c, row in zip(calibrations, matrix)])
            per_rank = np.where(matrix > 0, probability, 0.0).sum(axis=0).tolist()
        return self._cumulative(len(scores), per_rank)

    def _cumulative(self, batch: int, per_rank: list[float]) -> dict[int, float]:
        cumulative = [0.0]
        for value in per_rank:
            cumulative.append(cumulative[-1] + value)
        cumulative += [cumulative[-1]] * (self.widths[-1] - len(cumulative))  # ranks no candidate reaches
        return {w: batch + cumulative[w - 1] for w in self.widths}

    def choose(self, scores: Sequence[Sequence[float]], keys: int = 0,
               calibrations: Sequence[Calibration] | None = None, rank_sums: np.ndarray | None = None) -> int:
        """Width for a batch whose requests' candidate scores (best first) are ``scores``;
        ``keys``: the batch's committed tokens (attention work grows with them); ``rank_sums``:
        see `expected_tokens`."""
        batch = len(scores)
        step = self.steps
        self.steps += 1
        if self.cycle:
            width = self.widths[step % len(self.widths)]
        else:
            gains = self.expected_tokens(scores, calibrations, rank_sums)
            costs = self.predicted_costs(batch, keys, self.caution)
            rates = {w: gains[w] / costs[w] for w in self.widths}
            width = max(self.widths, key=lambda w: (rates[w], -w))
            period = self.early_explore_every if step < self.early_steps else self.explore_every
            if period and step % period == period - 1:
                width = self._neighbour(width, step // period)
        self.histogram[width] += 1
        return width

    def _neighbour(self, width: int, turn: int) -> int:
        """The width an exploring step takes instead of ``width``: the next wider one while it is
        not measured yet, else the narrower and the wider in turn."""
        i = self.widths.index(width)
        wider = self.widths[i + 1] if i + 1 < len(self.widths) else None
        narrower = self.widths[i - 1] if i > 0 else None
        if wider is not None and self.measured[wider] < self.min_observations:
            return wider
        options = [w for w in (narrower, wider) if w is not None]
        return options[turn % len(options)] if options else width

    def record_cost(self, batch: int, width: int, keys: int, seconds: float, follows: bool = False) -> None:
        """A verify step's measured seconds (from its start to the next step's start); ``follows``:
        it began when the step recorded before it ended."""
        if seconds > 0 and math.isfinite(seconds):
            self.cost.record(batch, width, keys, seconds, follows)
            self.measured[width] += 1

    def record_outcome(self, scores: Sequence[float], accepted: Sequence[bool]) -> None:
        """Per proposed draft node of a step: its score and whether it was accepted."""
        if len(scores):
            self.calibration.record(scores, accepted)

    def report(self) -> dict:
        return {
            "widths": list(self.widths),
            "width_histogram": {str(w): n for w, n in self.histogram.items()},
            "cost_observations_per_width": {str(w): n for w, n in self.measured.items()},
            "calibration": self.calibration.report(),
            "cost_model_seconds": {**{name: float(v) for name, v in zip(CostModel.names, self.cost.theta)},
                                   "observations": self.cost.observations, "width_pairs": self.cost.width_pairs},
            "cost_window": self.cost.window_rows(),
        }


class TenantWidthPolicies:
    """One :class:`WidthPolicy` per tenant, so that what one tenant's requests teach the policy
    (its calibration, its cost observations, where its warm-up and exploration steps fall) never
    sets the width of another tenant's steps: otherwise the width, and with it a request's step
    count, would carry a signal of other tenants' text. Requests without a tenant share one.

    A batch of one tenant is decided by that tenant's policy alone. A mixed batch (one width for
    all) takes each request's acceptance probabilities from its own tenant's calibration and the
    cost model and counters of the tenant with most requests in it; such co-batched requests can
    move each other's widths, as they move each other's latency in any shared server. At most
    ``max_tenants`` policies are kept (least recently used dropped)."""

    def __init__(self, widths: Sequence[int], cycle: bool = False, max_tenants: int = 64) -> None:
        self.widths = tuple(sorted(widths))
        self.cycle = cycle
        self.max_tenants = max_tenants
        self._policies: OrderedDict[Hashable, WidthPolicy] = OrderedDict()
        self._last_cost_tenants: set[Hashable] = set()  # the tenants of the last step costed
        self._last_tenants: tuple[tuple, Hashable | None] | None = None  # a batch's tenants, its one tenant

    def sole_tenant(self, tenants: Sequence[Hashable]) -> tuple[bool, Hashable | None]:
        """(True, the tenant) if every request of a batch has the same tenant, else (False, None).
        A tuple of tenants (immutable) is looked at once while the same one comes back."""
        last = self._last_tenants
        if last is not None and last[0] is tenants:
            return last[1]
        first = tenants[0]
        answer = (True, first) if all(t == first for t in tenants) else (False, None)
        if type(tenants) is tuple:
            self._last_tenants = (tenants, answer)
        return answer

    def policy(self, tenant: Hashable) -> WidthPolicy:
        policy = self._policies.get(tenant)
        if policy is None:
            policy = self._policies[tenant] = WidthPolicy(self.widths, cycle=self.cycle)
            while len(self._policies) > self.max_tenants:
                self._policies.popitem(last=False)
        else:
            self._policies.move_to_end(tenant)
        return policy

    def rank_weights(self, tenants: Sequence[Hashable]) -> tuple | None:
        """For a batch of one tenant, its calibration as the drafter's rank weights (the drafter then
        sums the acceptance probabilities per rank as it makes the scores); None otherwise."""
        sole, tenant = self.sole_tenant(tenants)
        return self.policy(tenant).calibration.rank_weights() if sole and not self.cycle else None

    def choose(self, tenants: Sequence[Hashable], scores: Sequence[Sequence[float]], keys: int = 0,
               rank_sums: np.ndarray | None = None) -> int:
        """``rank_sums``: what the drafter made from `rank_weights` (a batch of one tenant)."""
        sole, tenant = self.sole_tenant(tenants)
        if sole:  # one tenant: its policy alone
            return self.policy(tenant).choose(scores, keys, rank_sums=rank_sums)
        lead = Counter(tenants).most_common(1)[0][0]
        policy = self.policy(lead)
        calibrations = [self.policy(t).calibration for t in tenants]
        return policy.choose(scores, keys, calibrations)

    def record_cost(self, tenants: Sequence[Hashable], width: int, keys: int, seconds: float,
                    follows: bool = False) -> None:
        """A step's cost to each of its tenants' policies; it follows a tenant's previous row only if
        the step just before it also held that tenant (else that row was another, older step)."""
        present = set(tenants)
        for tenant in present:
            self.policy(tenant).record_cost(len(tenants), width, keys, seconds,
                                            follows and tenant in self._last_cost_tenants)
        self._last_cost_tenants = present

    def record_outcome(self, tenant: Hashable, scores: Sequence[float], accepted: Sequence[bool]) -> None:
        self.policy(tenant).record_outcome(scores, accepted)

    def report(self) -> dict:
        """The default tenant's report (or the most recent tenant's), and the tenants' histograms."""
        if not self._policies:
            return {"widths": list(self.widths), "tenants": 0}
        main = self._policies.get(None) or next(reversed(self._policies.values()))
        histogram = dict.fromkeys((str(w) for w in self.widths), 0)
        for policy in self._policies.values():
            for w, n in policy.histogram.items():
                histogram[str(w)] += n
        return {**main.report(), "width_histogram": histogram, "tenants": len(self._policies)}
