package network

import "net/url"

// RedactServer returns a remote cluster's server URL fit to show in logs, status and
// debug output: scheme, host and path, without userinfo, query or fragment. A value
// that does not parse as a URL is replaced by a placeholder rather than shown.
func RedactServer(server string) string {
	if server == "" {
		return ""
	}
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		return "<unparseable server URL>"
	}
	out := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return out.String()
}
