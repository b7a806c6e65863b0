"""What the learnGene methods (GENE-FL, FedLG) share: each cluster's learnGene.

Clients of a cluster each upload their own choice of layers; the cluster learnGene is the
set of layers chosen by at least half of the cluster's participants in the last round
that had any (SPEC §4). A new client inherits it without the classifier head unless
``inherit_head`` (SPEC §5: the head starts fresh, the new client's classes are new). In the
agnostic phase the known classes' head is not sent in any download either, until the
cluster's agnostic clients have uploaded a head of their own (from then on the cluster's
head holds only theirs: aggregation replaces a layer by the mean of its senders).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genefl.algorithms.base import RoundReport


class ClusterLearnGenes:
    """Per cluster, the layer sets chosen by the participants of its last round."""

    def __init__(self, layer_names: Sequence[str], head: str, num_clusters: int) -> None:
        self.layer_names = list(layer_names)
        self.head = head
        self.num_clusters = num_clusters
        self.last_choices: dict[int, list[tuple[str, ...]]] = {}
        #: clusters whose head was last aggregated from agnostic clients' uploads
        self.agnostic_head: set[int] = set()

    def record(self, report: RoundReport) -> None:
        """Remember the choices of each cluster that had uploads this round, and whether
        agnostic clients uploaded a head.
        """
        for cluster, choices in report.chosen.items():
            if choices:
                self.last_choices[cluster] = list(choices)
            if report.phase == "agnostic" and any(self.head in c for c in choices):
                self.agnostic_head.add(cluster)

    def downloadable(
        self, cluster: int, names: Sequence[str], phase: str, inherit_head: bool
    ) -> list[str]:
        """``names`` without the head when it would carry the known classes to an
        agnostic client (agnostic phase, no agnostic head aggregated yet, no
        ``inherit_head``).
        """
        if phase != "agnostic" or inherit_head or cluster in self.agnostic_head:
            return list(names)
        return [n for n in names if n != self.head]

    def layers(self, cluster: int) -> list[str]:
        """Layers chosen by at least half of the cluster's last participants, model order
        (empty if the cluster never had participants).
        """
        choices = self.last_choices.get(cluster, [])
        counts = dict.fromkeys(self.layer_names, 0)
        for chosen in choices:
            for name in chosen:
                counts[name] += 1
        return [n for n, c in counts.items() if c > 0 and 2 * c >= len(choices)]

    def package(self, cluster: int, inherit_head: bool) -> list[str]:
        """What a new client downloads: the learnGene, without the head unless asked."""
        layers = self.layers(cluster)
        return layers if inherit_head else [n for n in layers if n != self.head]

    def state_dict(self) -> dict[str, Any]:
        """The remembered choices and agnostic-head clusters, as plain lists."""
        return {
            "choices": {str(k): [list(c) for c in v] for k, v in self.last_choices.items()},
            "agnostic_head": sorted(self.agnostic_head),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        choices = state["choices"]
        self.last_choices = {int(k): [tuple(c) for c in v] for k, v in choices.items()}
        self.agnostic_head = {int(k) for k in state["agnostic_head"]}

    def summary(self) -> dict[str, Any]:
        """Each cluster's learnGene layers and the head's name."""
        return {
            "cluster_learngene_layers": {
                str(k): self.layers(k) for k in range(self.num_clusters)
            },
            "classifier_head": self.head,
        }
