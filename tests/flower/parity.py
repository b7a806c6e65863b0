"""What must be equal between genefl's drivers (in-process engine, Flower simulation, a
Flower deployment) for the same run: results.json entries compared exactly, and the
accuracies compared to a tolerance each test states.
"""

#: results.json entries that must be equal to ``genefl run``'s
BYTES = ("upload_bytes", "download_bytes", "upload_bytes_agnostic", "download_bytes_agnostic",
         "full_model_upload_bytes", "init_bytes_total", "signature_bytes",
         "known_round_upload_bytes", "learngene_bytes", "agnostic_joined", "cluster_sizes",
         "dropped_updates", "rejected_uploads", "diverged_updates")
ACCURACIES = ("known_accuracy", "known_accuracy_last10", "agnostic_accuracy_round0",
              "agnostic_accuracy_last10")
