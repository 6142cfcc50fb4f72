package eds

import (
	"fmt"
	"strconv"
	"strings"
)

// ClusterName is the sidecar's cluster for a service port: outbound|<port>||<host>.
func ClusterName(host string, port int32) string {
	return fmt.Sprintf("outbound|%d||%s", port, host)
}

// SNIName is the SNI, and the gateway's cluster name, for a service port:
// outbound_.<port>_._.<host>.
func SNIName(host string, port int32) string {
	return fmt.Sprintf("outbound_.%d_._.%s", port, host)
}

// ParseClusterName splits outbound|<port>||<host> (or the SNI form) into host and port.
func ParseClusterName(name string) (host string, port int32, ok bool) {
	var parts []string
	switch {
	case strings.HasPrefix(name, "outbound|"):
		parts = strings.SplitN(name, "|", 4)
		if len(parts) != 4 {
			return "", 0, false
		}
		parts = []string{parts[1], parts[3]}
	case strings.HasPrefix(name, "outbound_."):
		parts = strings.SplitN(strings.TrimPrefix(name, "outbound_."), "_.", 3)
		if len(parts) != 3 {
			return "", 0, false
		}
		parts = []string{parts[0], parts[2]}
	default:
		return "", 0, false
	}
	p, err := strconv.ParseUint(parts[0], 10, 16)
	if err != nil || p == 0 || parts[1] == "" {
		return "", 0, false
	}
	return parts[1], int32(p), true
}
