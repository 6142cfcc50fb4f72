package secrets

import (
	"errors"
	"fmt"
	"regexp"
	"sort"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// LoadOptions says what an untrusted kubeconfig may use.
type LoadOptions struct {
	// AllowFilePaths lets a kubeconfig name files on Horizon's own file system
	// (tokenFile, client certificate and key files, CA file). Off by default: a remote
	// secret must not make Horizon read its local files.
	AllowFilePaths bool
}

var lineRE = regexp.MustCompile(`line \d+`)

// LoadKubeconfig parses an untrusted kubeconfig and returns a client config for its
// current context. It rejects empty or unparseable input, a missing context, cluster or
// server, exec credential plugins, auth-provider plugins and (unless allowed) file
// paths anywhere in the kubeconfig.
//
// Errors never quote the kubeconfig: a parse error says at most which line failed.
func LoadKubeconfig(data []byte, opts LoadOptions) (*rest.Config, error) {
	if len(data) == 0 {
		return nil, errors.New("kubeconfig is empty")
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		// Parser errors can quote the offending input, which may be a token: keep only
		// the position.
		where := ""
		if m := lineRE.FindString(err.Error()); m != "" {
			where = " at " + m
		}
		return nil, fmt.Errorf("kubeconfig is not valid YAML or JSON%s", where)
	}
	if err := checkUntrusted(cfg, opts); err != nil {
		return nil, err
	}
	if cfg.CurrentContext == "" {
		return nil, errors.New("kubeconfig has no current-context")
	}
	kctx, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		return nil, fmt.Errorf("kubeconfig current-context %q is not defined", cfg.CurrentContext)
	}
	cluster, ok := cfg.Clusters[kctx.Cluster]
	if !ok {
		return nil, fmt.Errorf("kubeconfig context %q names cluster %q, which is not defined", cfg.CurrentContext, kctx.Cluster)
	}
	if cluster.Server == "" {
		return nil, fmt.Errorf("kubeconfig cluster %q has no server", kctx.Cluster)
	}
	if kctx.AuthInfo != "" {
		if _, ok := cfg.AuthInfos[kctx.AuthInfo]; !ok {
			return nil, fmt.Errorf("kubeconfig context %q names user %q, which is not defined", cfg.CurrentContext, kctx.AuthInfo)
		}
	}
	rc, err := clientcmd.NewDefaultClientConfig(*cfg, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		// Client-config errors name fields and files, not credentials.
		return nil, fmt.Errorf("kubeconfig context %q: %w", cfg.CurrentContext, err)
	}
	return rc, nil
}

// checkUntrusted rejects what an untrusted kubeconfig must not use, in every user and
// cluster it defines, not only the current one.
func checkUntrusted(cfg *clientcmdapi.Config, opts LoadOptions) error {
	for _, name := range sortedKeys(cfg.AuthInfos) {
		u := cfg.AuthInfos[name]
		if u == nil {
			continue
		}
		if u.Exec != nil {
			return fmt.Errorf("kubeconfig user %q uses an exec credential plugin, which is not allowed", name)
		}
		if u.AuthProvider != nil {
			return fmt.Errorf("kubeconfig user %q uses auth-provider %q, which is not allowed", name, u.AuthProvider.Name)
		}
		if opts.AllowFilePaths {
			continue
		}
		for _, f := range []struct{ field, path string }{
			{"tokenFile", u.TokenFile},
			{"client-certificate", u.ClientCertificate},
			{"client-key", u.ClientKey},
		} {
			if f.path != "" {
				return fmt.Errorf("kubeconfig user %q sets %s, a file path, which is not allowed", name, f.field)
			}
		}
	}
	if !opts.AllowFilePaths {
		for _, name := range sortedKeys(cfg.Clusters) {
			if c := cfg.Clusters[name]; c != nil && c.CertificateAuthority != "" {
				return fmt.Errorf("kubeconfig cluster %q sets certificate-authority, a file path, which is not allowed", name)
			}
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
