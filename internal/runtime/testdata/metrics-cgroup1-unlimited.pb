
4type.googleapis.com/io.containerd.cgroups.v1.Metrics
*"Š€àÿÿÿÿÿÿ€€@