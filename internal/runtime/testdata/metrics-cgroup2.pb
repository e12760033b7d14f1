
4type.googleapis.com/io.containerd.cgroups.v2.Metrics*
€ Ë˜€‰z Â"h€€€
€€€€2ˆ€€€€