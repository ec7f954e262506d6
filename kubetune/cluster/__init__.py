"""Training across nodes: the Kubeflow Trainer TrainJob a launcher submits and follows, and what each node runs."""
