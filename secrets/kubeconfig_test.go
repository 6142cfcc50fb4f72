package secrets

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
)

const secretToken = "tok-s3cr3t-value-never-shown"

func kubeconfig(user string) string {
	return `apiVersion: v1
kind: Config
current-context: remote
contexts:
- name: remote
  context: {cluster: remote, user: remote}
clusters:
- name: remote
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: ""
users:
- name: remote
  user:
` + user
}

// withCluster returns a token kubeconfig whose cluster has extra fields, given as
// YAML indented under "cluster:".
func withCluster(fields string) string {
	return strings.Replace(kubeconfig("    token: "+secretToken+"\n"), "    server: ", fields+"    server: ", 1)
}

// withServer returns a token kubeconfig for server.
func withServer(server string) string {
	return strings.Replace(kubeconfig("    token: x\n"), "https://127.0.0.1:6443", server, 1)
}

func TestLoadKubeconfig(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		opts    LoadOptions
		wantErr string // empty: accepted
		check   func(*testing.T, *rest.Config)
	}{
		{name: "token", data: kubeconfig("    token: " + secretToken + "\n")},
		{name: "empty", data: "", wantErr: "kubeconfig is empty"},
		{name: "garbage bytes", data: "\x00\xff\xfe" + secretToken + "{{{", wantErr: "not valid YAML or JSON"},
		{name: "garbage yaml quoting the token", data: "users: [" + secretToken, wantErr: "not valid YAML or JSON"},
		{name: "no current context", data: strings.Replace(kubeconfig("    token: x\n"), "current-context: remote", "", 1), wantErr: "no current-context"},
		{name: "current context undefined", data: strings.Replace(kubeconfig("    token: x\n"), "current-context: remote", "current-context: other", 1), wantErr: `current-context "other" is not defined`},
		{name: "context names missing cluster", data: strings.Replace(kubeconfig("    token: x\n"), "{cluster: remote,", "{cluster: nope,", 1), wantErr: `names cluster "nope"`},
		{name: "no server", data: strings.Replace(kubeconfig("    token: x\n"), "server: https://127.0.0.1:6443", "server: \"\"", 1), wantErr: "has no server"},
		{name: "exec plugin", data: kubeconfig("    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, 'curl evil']\n"), wantErr: `user "remote" uses an exec credential plugin`},
		{name: "auth provider", data: kubeconfig("    auth-provider:\n      name: gcp\n"), wantErr: `auth-provider "gcp"`},
		{name: "token file", data: kubeconfig("    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n"), wantErr: "sets tokenFile, a file path"},
		{name: "token file allowed", data: kubeconfig("    tokenFile: kubeconfig_test.go\n"), opts: LoadOptions{AllowFilePaths: true}},
		{name: "client certificate file", data: kubeconfig("    client-certificate: /etc/cert.pem\n    client-key-data: eA==\n"), wantErr: "sets client-certificate, a file path"},
		{name: "client key file", data: kubeconfig("    client-certificate-data: eA==\n    client-key: /etc/key.pem\n"), wantErr: "sets client-key, a file path"},
		{name: "CA file", data: strings.Replace(kubeconfig("    token: x\n"), `certificate-authority-data: ""`, "certificate-authority: /etc/ca.pem", 1), wantErr: "sets certificate-authority, a file path"},
		{name: "exec field path", data: kubeconfig("    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: evil\n"), wantErr: "users[0].user.exec: "},
		{name: "impersonate user", data: kubeconfig("    token: " + secretToken + "\n    as: system:admin\n"), wantErr: "users[0].user.as: impersonation is not allowed in a remote kubeconfig"},
		{name: "impersonate groups", data: kubeconfig("    token: x\n    as-groups: [system:masters]\n"), wantErr: "users[0].user.as-groups: impersonation is not allowed in a remote kubeconfig"},
		{name: "impersonate uid", data: kubeconfig("    token: x\n    as-uid: \"0\"\n"), wantErr: "users[0].user.as-uid: impersonation is not allowed in a remote kubeconfig"},
		{name: "impersonate extra", data: kubeconfig("    token: x\n    as-user-extra: {scopes: [all]}\n"), wantErr: "users[0].user.as-user-extra: impersonation is not allowed in a remote kubeconfig"},
		{name: "basic auth", data: kubeconfig("    username: admin\n    password: " + secretToken + "\n"), wantErr: "users[0].user.username: basic authentication is not allowed in a remote kubeconfig"},
		{name: "basic auth password only", data: kubeconfig("    password: " + secretToken + "\n"), wantErr: "users[0].user.password: basic authentication is not allowed in a remote kubeconfig"},
		{name: "impersonation in a second user", data: kubeconfig("    token: x\n- name: other\n  user:\n    as: system:admin\n"), wantErr: "users[1].user.as: impersonation"},
		{name: "client cert without key", data: kubeconfig("    client-certificate-data: eA==\n"), wantErr: "needs both a client certificate and a client key"},
		{name: "client cert and key data", data: kubeconfig("    client-certificate-data: eA==\n    client-key-data: eA==\n")},
		{name: "tls-server-name", data: withCluster("    tls-server-name: api.internal\n"), check: func(t *testing.T, c *rest.Config) {
			if c.TLSClientConfig.ServerName != "api.internal" {
				t.Fatalf("ServerName = %q", c.TLSClientConfig.ServerName)
			}
		}},
		{name: "CA data and token kept", data: strings.Replace(kubeconfig("    token: "+secretToken+"\n"), `certificate-authority-data: ""`, "certificate-authority-data: eA==", 1), check: func(t *testing.T, c *rest.Config) {
			if c.BearerToken != secretToken || string(c.TLSClientConfig.CAData) != "x" {
				t.Fatalf("token or CA data lost")
			}
		}},
		{name: "insecure-skip-tls-verify", data: withCluster("    insecure-skip-tls-verify: true\n"), wantErr: "clusters[0].cluster.insecure-skip-tls-verify: turning off server certificate checks is not allowed in a remote kubeconfig (see --remote-allow-insecure-skip-tls-verify)"},
		{name: "insecure-skip-tls-verify allowed", data: withCluster("    insecure-skip-tls-verify: true\n"), opts: LoadOptions{AllowInsecureSkipTLSVerify: true}, check: func(t *testing.T, c *rest.Config) {
			if !c.TLSClientConfig.Insecure {
				t.Fatal("Insecure not set")
			}
		}},
		{name: "insecure-skip-tls-verify allowed with CA", data: strings.Replace(withCluster("    insecure-skip-tls-verify: true\n"), `certificate-authority-data: ""`, "certificate-authority-data: eA==", 1), opts: LoadOptions{AllowInsecureSkipTLSVerify: true}, wantErr: "sets both a certificate authority and insecure-skip-tls-verify"},
		{name: "proxy-url", data: withCluster("    proxy-url: http://attacker.example:3128\n"), wantErr: "clusters[0].cluster.proxy-url: a proxy is not allowed in a remote kubeconfig (see --remote-allow-proxy-url)"},
		{name: "proxy-url allowed", data: withCluster("    proxy-url: http://proxy.example:3128\n"), opts: LoadOptions{AllowProxyURL: true}, check: func(t *testing.T, c *rest.Config) {
			if c.Proxy == nil {
				t.Fatal("Proxy not set")
			}
			u, err := c.Proxy(nil)
			if err != nil || u.Host != "proxy.example:3128" {
				t.Fatalf("proxy = %v, %v", u, err)
			}
		}},
		{name: "proxy-url allowed with credentials", data: withCluster("    proxy-url: http://u:" + secretToken + "@proxy.example:3128\n"), opts: LoadOptions{AllowProxyURL: true}, wantErr: "clusters[0].cluster.proxy-url: credentials in the URL (userinfo) are not allowed"},
		{name: "http server", data: withServer("http://127.0.0.1:6443"), wantErr: "clusters[0].cluster.server: http:// scheme is not allowed in a remote kubeconfig (see --remote-allow-http)"},
		{name: "http server allowed", data: withServer("http://127.0.0.1:6443"), opts: LoadOptions{AllowHTTP: true}, check: func(t *testing.T, c *rest.Config) {
			if c.Host != "http://127.0.0.1:6443" {
				t.Fatalf("host = %q", c.Host)
			}
		}},
		{name: "server with userinfo", data: withServer("https://admin:" + secretToken + "@127.0.0.1:6443"), wantErr: "clusters[0].cluster.server: credentials in the URL (userinfo) are not allowed in a remote kubeconfig"},
		{name: "server with userinfo, no scheme", data: withServer("admin:" + secretToken + "@127.0.0.1:6443"), wantErr: "clusters[0].cluster.server: the URL's scheme is not allowed"},
		{name: "server with query", data: withServer("https://127.0.0.1:6443?token=" + secretToken), wantErr: "clusters[0].cluster.server: a query in the server URL is not allowed"},
		{name: "server with fragment", data: withServer("https://127.0.0.1:6443#" + secretToken), wantErr: "clusters[0].cluster.server: a fragment in the server URL is not allowed"},
		{name: "file scheme", data: withServer("file:///etc/passwd"), wantErr: "clusters[0].cluster.server: the URL's scheme is not allowed"},
		{name: "metadata address", data: withServer("https://169.254.169.254"), wantErr: "clusters[0].cluster.server: a link-local, multicast or unspecified server address is not allowed"},
		{name: "unspecified address", data: withServer("https://0.0.0.0:6443"), wantErr: "link-local, multicast or unspecified"},
		{name: "IPv6 link-local", data: withServer("https://[fe80::1]:6443"), wantErr: "link-local, multicast or unspecified"},
		{name: "exec in an unused user", data: kubeconfig("    token: x\n- name: other\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: evil\n"), wantErr: `user "other" uses an exec credential plugin`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadKubeconfig([]byte(tt.data), tt.opts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if tt.check != nil {
					tt.check(t, cfg)
				} else if cfg.Host != "https://127.0.0.1:6443" {
					t.Fatalf("host = %q", cfg.Host)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), secretToken) {
				t.Fatalf("error quotes the kubeconfig: %q", err)
			}
		})
	}
}

// Every cluster a kubeconfig defines is checked, not only the current one.
func TestLoadKubeconfigChecksUnusedCluster(t *testing.T) {
	data := kubeconfig("    token: x\n") + `
`
	data = strings.Replace(data, "users:\n", "- name: unused\n  cluster:\n    server: https://admin:"+secretToken+"@other.example\nusers:\n", 1)
	_, err := LoadKubeconfig([]byte(data), LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), "clusters[1].cluster.server: credentials in the URL") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), secretToken) || strings.Contains(err.Error(), "admin") {
		t.Fatalf("error quotes the kubeconfig: %q", err)
	}
}

func TestOptionsFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    Options
		wantErr string
	}{
		{name: "defaults", want: Options{Namespace: "istio-system", ClusterID: "Kubernetes", MaxKeysPerSecret: DefaultMaxKeysPerSecret, MaxClusters: DefaultMaxClusters,
			ExpiryWarning: DefaultExpiryWarning}},
		{name: "opt-ins", args: []string{"--remote-allow-insecure-skip-tls-verify", "--remote-allow-http", "--remote-allow-proxy-url", "--remote-max-keys-per-secret=5",
			"--remote-max-clusters=7", "--remote-refuse-loopback", "--remote-secrets-namespace=horizon-remotes", "--credential-expiry-warning=72h"},
			want: Options{Namespace: "istio-system", SecretsNamespace: "horizon-remotes", ClusterID: "Kubernetes", MaxKeysPerSecret: 5, MaxClusters: 7, ExpiryWarning: 72 * time.Hour,
				Load: LoadOptions{AllowInsecureSkipTLSVerify: true, AllowHTTP: true, AllowProxyURL: true, RefuseLoopback: true}}},
		{name: "negative cap", args: []string{"--remote-max-keys-per-secret=-1"}, wantErr: "--remote-max-keys-per-secret: must not be negative"},
		{name: "negative cluster cap", args: []string{"--remote-max-clusters=-1"}, wantErr: "--remote-max-clusters: must not be negative"},
		{name: "negative expiry warning", args: []string{"--credential-expiry-warning=-1s"}, wantErr: "--credential-expiry-warning -1s: must be between 0 and"},
		{name: "bad secrets namespace", args: []string{"--remote-secrets-namespace=Not_A_Namespace"}, wantErr: `--remote-secrets-namespace "Not_A_Namespace": `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o Options
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := o.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o != tt.want {
				t.Fatalf("options = %+v, want %+v", o, tt.want)
			}
		})
	}
}

// TestLoadKubeconfigRefusalKinds: each refusal carries the kind that labels the
// refusal metric.
func TestLoadKubeconfigRefusalKinds(t *testing.T) {
	tests := []struct {
		name string
		data string
		opts LoadOptions
		want RefusalKind
	}{
		{"exec", kubeconfig("    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: evil\n"), LoadOptions{}, RefusedExec},
		{"auth provider", kubeconfig("    auth-provider:\n      name: gcp\n"), LoadOptions{}, RefusedAuthProvider},
		{"impersonation", kubeconfig("    token: x\n    as: system:admin\n"), LoadOptions{}, RefusedImpersonation},
		{"basic auth", kubeconfig("    username: admin\n    password: " + secretToken + "\n"), LoadOptions{}, RefusedBasicAuth},
		{"token file", kubeconfig("    tokenFile: /etc/token\n"), LoadOptions{}, RefusedFilePath},
		{"CA file", strings.Replace(kubeconfig("    token: x\n"), `certificate-authority-data: ""`, "certificate-authority: /etc/ca.pem", 1), LoadOptions{}, RefusedFilePath},
		{"insecure-skip-tls-verify", withCluster("    insecure-skip-tls-verify: true\n"), LoadOptions{}, RefusedInsecureSkipTLSVerify},
		{"proxy-url", withCluster("    proxy-url: http://attacker.example:3128\n"), LoadOptions{}, RefusedProxyURL},
		{"proxy-url with userinfo", withCluster("    proxy-url: http://u:p@proxy.example:3128\n"), LoadOptions{AllowProxyURL: true}, RefusedUserinfo},
		{"http", withServer("http://127.0.0.1:6443"), LoadOptions{}, RefusedHTTP},
		{"userinfo", withServer("https://admin:" + secretToken + "@127.0.0.1:6443"), LoadOptions{}, RefusedUserinfo},
		{"query", withServer("https://127.0.0.1:6443?x=y"), LoadOptions{}, RefusedQuery},
		{"metadata address", withServer("https://169.254.169.254"), LoadOptions{}, RefusedAddress},
		{"broadcast address", withServer("https://255.255.255.255"), LoadOptions{}, RefusedAddress},
		{"loopback refused", withServer("https://127.0.0.1:6443"), LoadOptions{RefuseLoopback: true}, RefusedAddress},
		{"file scheme", withServer("file:///etc/passwd"), LoadOptions{}, RefusedOther},
		{"not YAML", "users: [" + secretToken, LoadOptions{}, RefusedMalformed},
		{"no current context", strings.Replace(kubeconfig("    token: x\n"), "current-context: remote", "", 1), LoadOptions{}, RefusedMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadKubeconfig([]byte(tt.data), tt.opts)
			if err == nil {
				t.Fatal("accepted")
			}
			if got := RefusalKindOf(err); got != tt.want {
				t.Fatalf("kind %q, want %q (error %q)", got, tt.want, err)
			}
		})
	}
	if got := RefusalKindOf(errors.New("x")); got != RefusedOther {
		t.Errorf("kind of a foreign error = %q, want other", got)
	}
}
