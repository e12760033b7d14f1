
4type.googleapis.com/io.containerd.cgroups.v2.Metrics

"€€€Àˆÿÿÿÿÿÿÿÿÿ