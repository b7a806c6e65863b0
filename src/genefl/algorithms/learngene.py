"""What the learnGene methods (GENE-FL, FedLG) share: each cluster's learnGene.

Clients of a cluster each upload their own choice of layers; the cluster learnGene is the
set of layers chosen by at least half of the cluster's participants in the last round
that had any (SPEC §4). A new client inherits it without the classifier head unless
``inherit_head`` (SPEC §5: the head starts fresh, the new client's classes are new).
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

    def record(self, report: RoundReport) -> None:
        """Remember the choices of each cluster that had uploads this round."""
        for cluster, choices in report.chosen.items():
            if choices:
                self.last_choices[cluster] = list(choices)

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
        """The remembered choices, as plain lists."""
        return {str(k): [list(c) for c in v] for k, v in self.last_choices.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.last_choices = {int(k): [tuple(c) for c in v] for k, v in state.items()}

    def summary(self) -> dict[str, Any]:
        """Each cluster's learnGene layers and the head's name."""
        return {
            "cluster_learngene_layers": {
                str(k): self.layers(k) for k in range(self.num_clusters)
            },
            "classifier_head": self.head,
        }
