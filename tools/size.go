package tools

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// parseSize reads sizes like "512M", "2G", "1.5GiB" or "1048576" as bytes.
// Units are binary (K = 1024), as in docker and Kubernetes' Mi/Gi.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	num := strings.TrimRightFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	unit := strings.ToUpper(strings.TrimSpace(s[len(num):]))
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
	sh, ok := shift[unit]
	v, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || v < 0 || math.IsInf(v, 0) {
		return 0, fmt.Errorf("size %q: use a number with an optional unit K, M, G or T (e.g. 512M)", s)
	}
	bytes := v * float64(uint64(1)<<sh)
	if bytes > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(bytes), nil
}
