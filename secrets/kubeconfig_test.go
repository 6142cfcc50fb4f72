package secrets

import (
	"strings"
	"testing"
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

func TestLoadKubeconfig(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		opts    LoadOptions
		wantErr string // empty: accepted
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
		{name: "exec in an unused user", data: kubeconfig("    token: x\n- name: other\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: evil\n"), wantErr: `user "other" uses an exec credential plugin`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadKubeconfig([]byte(tt.data), tt.opts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if cfg.Host != "https://127.0.0.1:6443" {
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
