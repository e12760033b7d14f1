
4type.googleapis.com/io.containerd.cgroups.v1.Metrics1d
€Ş Ë€Æ†€˜š¼"ğ€€€Š
€€€ €€€