package secrets

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"sort"

	"k8s.io/client-go/rest"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"
)

// LoadOptions says what an untrusted kubeconfig may use beyond the allowlist.
type LoadOptions struct {
	// AllowFilePaths lets a kubeconfig name files on Horizon's own file system
	// (tokenFile, client certificate and key files, CA file). Off by default: a remote
	// secret must not make Horizon read its local files.
	AllowFilePaths bool
	// AllowInsecureSkipTLSVerify lets a kubeconfig turn off server certificate checks.
	AllowInsecureSkipTLSVerify bool
	// AllowHTTP lets a kubeconfig name an http:// server: credentials travel in clear.
	AllowHTTP bool
	// AllowProxyURL lets a kubeconfig route Horizon's connections through a proxy it
	// names.
	AllowProxyURL bool
	// RefuseLoopback refuses a server at a loopback address, given as such or as a
	// name resolving to one. Off by default, as local test clusters and demos listen
	// on loopback; in a pod no remote API server is on loopback, so turning it on
	// keeps a Secret from pointing Horizon at its own host.
	RefuseLoopback bool
	// Resolver looks server host names up when Horizon connects; every address it
	// returns is checked (see DialContext). net.DefaultResolver when nil; tests
	// inject their own.
	Resolver Resolver
}

// Resolver looks a host name up, as *net.Resolver does.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

var lineRE = regexp.MustCompile(`line \d+`)

// LoadKubeconfig parses an untrusted kubeconfig and builds a client config for its
// current context from an allowlist: a bearer token, client certificate and key data,
// CA data, an https:// server and tls-server-name. Everything else that changes where
// or how Horizon connects or whom it acts as is refused, in every cluster and user
// the kubeconfig defines, with an error naming the field: exec and auth-provider
// plugins, impersonation, basic auth, and (unless LoadOptions allows them) file paths,
// insecure-skip-tls-verify, http:// servers and proxy-url. A server URL must not carry
// userinfo, a query or a fragment, nor name a link-local, multicast, broadcast or
// unspecified address (nor loopback with RefuseLoopback). The returned config dials
// through a checker that applies the same address rule to whatever the server name
// resolves to at each connection. Inert metadata (extensions, preferences, a context's
// namespace) is ignored. Every error carries a RefusalKind (see RefusalKindOf).
//
// Errors never quote the kubeconfig's values: a parse error says at most which line
// failed; other errors name fields and the kubeconfig's own cluster, user and context
// names.
func LoadKubeconfig(data []byte, opts LoadOptions) (*rest.Config, error) {
	if len(data) == 0 {
		return nil, refuse(RefusedMalformed, errors.New("kubeconfig is empty"))
	}
	var cfg clientcmdv1.Config
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		// Parser errors can quote the offending input, which may be a token: keep only
		// the position.
		where := ""
		if m := lineRE.FindString(err.Error()); m != "" {
			where = " at " + m
		}
		return nil, refuse(RefusedMalformed, fmt.Errorf("kubeconfig is not valid YAML or JSON%s", where))
	}
	if err := checkUntrusted(&cfg, opts); err != nil {
		return nil, err
	}
	if cfg.CurrentContext == "" {
		return nil, refuse(RefusedMalformed, errors.New("kubeconfig has no current-context"))
	}
	var kctx *clientcmdv1.Context
	for i := range cfg.Contexts {
		if cfg.Contexts[i].Name == cfg.CurrentContext {
			kctx = &cfg.Contexts[i].Context
			break
		}
	}
	if kctx == nil {
		return nil, refuse(RefusedMalformed, fmt.Errorf("kubeconfig current-context %q is not defined", cfg.CurrentContext))
	}
	var cluster *clientcmdv1.Cluster
	for i := range cfg.Clusters {
		if cfg.Clusters[i].Name == kctx.Cluster {
			cluster = &cfg.Clusters[i].Cluster
			break
		}
	}
	if cluster == nil {
		return nil, refuse(RefusedMalformed, fmt.Errorf("kubeconfig context %q names cluster %q, which is not defined", cfg.CurrentContext, kctx.Cluster))
	}
	if cluster.Server == "" {
		return nil, refuse(RefusedMalformed, fmt.Errorf("kubeconfig cluster %q has no server", kctx.Cluster))
	}
	user := &clientcmdv1.AuthInfo{}
	if kctx.AuthInfo != "" {
		user = nil
		for i := range cfg.AuthInfos {
			if cfg.AuthInfos[i].Name == kctx.AuthInfo {
				user = &cfg.AuthInfos[i].AuthInfo
				break
			}
		}
		if user == nil {
			return nil, refuse(RefusedMalformed, fmt.Errorf("kubeconfig context %q names user %q, which is not defined", cfg.CurrentContext, kctx.AuthInfo))
		}
	}
	rc := &rest.Config{
		Host:            cluster.Server,
		BearerToken:     user.Token,
		BearerTokenFile: user.TokenFile,
		TLSClientConfig: rest.TLSClientConfig{
			ServerName: cluster.TLSServerName,
			Insecure:   cluster.InsecureSkipTLSVerify,
			CAData:     cluster.CertificateAuthorityData,
			CAFile:     cluster.CertificateAuthority,
			CertData:   user.ClientCertificateData,
			CertFile:   user.ClientCertificate,
			KeyData:    user.ClientKeyData,
			KeyFile:    user.ClientKey,
		},
	}
	// Every connection checks the addresses it goes to, whatever DNS answers later.
	rc.Dial = newDialer(opts).DialContext
	if cluster.ProxyURL != "" {
		// checkUntrusted parsed it already; this cannot fail.
		u, _ := url.Parse(cluster.ProxyURL)
		rc.Proxy = func(*http.Request) (*url.URL, error) { return u, nil }
	}
	return rc, nil
}

// checkUntrusted refuses what an untrusted kubeconfig must not use, in every user and
// cluster it defines, not only the current one.
func checkUntrusted(cfg *clientcmdv1.Config, opts LoadOptions) error {
	for i, nu := range cfg.AuthInfos {
		u := nu.AuthInfo
		field := func(f string) string { return fmt.Sprintf("users[%d].user.%s", i, f) }
		if u.Exec != nil {
			return refuse(RefusedExec, fmt.Errorf("%s: user %q uses an exec credential plugin, which is not allowed", field("exec"), nu.Name))
		}
		if u.AuthProvider != nil {
			return refuse(RefusedAuthProvider, fmt.Errorf("%s: user %q uses auth-provider %q, which is not allowed", field("auth-provider"), nu.Name, u.AuthProvider.Name))
		}
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"as", u.Impersonate != ""},
			{"as-uid", u.ImpersonateUID != ""},
			{"as-groups", len(u.ImpersonateGroups) > 0},
			{"as-user-extra", len(u.ImpersonateUserExtra) > 0},
		} {
			if f.set {
				return refuse(RefusedImpersonation, fmt.Errorf("%s: impersonation is not allowed in a remote kubeconfig", field(f.name)))
			}
		}
		if u.Username != "" {
			return refuse(RefusedBasicAuth, fmt.Errorf("%s: basic authentication is not allowed in a remote kubeconfig", field("username")))
		}
		if u.Password != "" {
			return refuse(RefusedBasicAuth, fmt.Errorf("%s: basic authentication is not allowed in a remote kubeconfig", field("password")))
		}
		if (len(u.ClientCertificateData) > 0 || u.ClientCertificate != "") != (len(u.ClientKeyData) > 0 || u.ClientKey != "") {
			return refuse(RefusedMalformed, fmt.Errorf("%s: user %q needs both a client certificate and a client key, or neither", field("client-certificate-data"), nu.Name))
		}
		if opts.AllowFilePaths {
			continue
		}
		for _, f := range []struct{ name, path string }{
			{"tokenFile", u.TokenFile},
			{"client-certificate", u.ClientCertificate},
			{"client-key", u.ClientKey},
		} {
			if f.path != "" {
				return refuse(RefusedFilePath, fmt.Errorf("%s: user %q sets %s, a file path, which is not allowed", field(f.name), nu.Name, f.name))
			}
		}
	}
	for i, nc := range cfg.Clusters {
		c := nc.Cluster
		field := func(f string) string { return fmt.Sprintf("clusters[%d].cluster.%s", i, f) }
		if c.CertificateAuthority != "" && !opts.AllowFilePaths {
			return refuse(RefusedFilePath, fmt.Errorf("%s: cluster %q sets certificate-authority, a file path, which is not allowed", field("certificate-authority"), nc.Name))
		}
		if c.InsecureSkipTLSVerify {
			if !opts.AllowInsecureSkipTLSVerify {
				return refuse(RefusedInsecureSkipTLSVerify, fmt.Errorf("%s: turning off server certificate checks is not allowed in a remote kubeconfig (see --remote-allow-insecure-skip-tls-verify)", field("insecure-skip-tls-verify")))
			}
			if len(c.CertificateAuthorityData) > 0 || c.CertificateAuthority != "" {
				return refuse(RefusedInsecureSkipTLSVerify, fmt.Errorf("%s: cluster %q sets both a certificate authority and insecure-skip-tls-verify", field("insecure-skip-tls-verify"), nc.Name))
			}
		}
		if c.ProxyURL != "" {
			if !opts.AllowProxyURL {
				return refuse(RefusedProxyURL, fmt.Errorf("%s: a proxy is not allowed in a remote kubeconfig (see --remote-allow-proxy-url)", field("proxy-url")))
			}
			if err := checkURL(c.ProxyURL, []string{"http", "https", "socks5"}, false, true); err != nil {
				return refuse(RefusalKindOf(err), fmt.Errorf("%s: %v", field("proxy-url"), err))
			}
		}
		if c.Server != "" {
			schemes := []string{"https"}
			if opts.AllowHTTP {
				schemes = append(schemes, "http")
			}
			if err := checkURL(c.Server, schemes, true, !opts.RefuseLoopback); err != nil {
				kind := RefusalKindOf(err)
				if errors.Is(err, errScheme) && !opts.AllowHTTP {
					err = fmt.Errorf("%w (see --remote-allow-http)", err)
				}
				return refuse(kind, fmt.Errorf("%s: %v", field("server"), err))
			}
		}
	}
	return nil
}

var errScheme = errors.New("scheme is not allowed in a remote kubeconfig")

// checkURL checks a URL from an untrusted kubeconfig. Its errors never quote the URL,
// which may hold credentials; each carries its RefusalKind (see urlRefusal).
func checkURL(raw string, schemes []string, server, allowLoopback bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return refuse(RefusedMalformed, errors.New("not a valid URL"))
	}
	ok := false
	for _, s := range schemes {
		if u.Scheme == s {
			ok = true
		}
	}
	if !ok {
		// Quote only a scheme Horizon knows: in "admin:S3CRET@host" the "scheme" is a
		// user name.
		switch u.Scheme {
		case "http":
			return refuse(RefusedHTTP, fmt.Errorf("http:// %w", errScheme))
		case "https", "socks5":
			return refuse(RefusedOther, fmt.Errorf("%s:// %w", u.Scheme, errScheme))
		}
		return refuse(RefusedOther, fmt.Errorf("the URL's %w", errScheme))
	}
	if u.User != nil {
		return refuse(RefusedUserinfo, errors.New("credentials in the URL (userinfo) are not allowed in a remote kubeconfig"))
	}
	if u.Hostname() == "" {
		return refuse(RefusedMalformed, errors.New("the URL has no host"))
	}
	if !server {
		return nil
	}
	if u.RawQuery != "" || u.ForceQuery {
		return refuse(RefusedQuery, errors.New("a query in the server URL is not allowed in a remote kubeconfig"))
	}
	if u.Fragment != "" {
		return refuse(RefusedQuery, errors.New("a fragment in the server URL is not allowed in a remote kubeconfig"))
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil {
		switch class := refusedAddressClass(a, allowLoopback); class {
		case "":
		case classLoopback:
			return refuse(RefusedAddress, errors.New("a loopback server address is not allowed in a remote kubeconfig (see --remote-allow-loopback)"))
		default:
			return refuse(RefusedAddress, fmt.Errorf("a link-local, multicast or unspecified server address is not allowed in a remote kubeconfig (this one is %s)", class))
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
