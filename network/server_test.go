package network

import "testing"

func TestRedactServer(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{name: "empty", in: "", want: ""},
		{name: "plain", in: "https://host:6443", want: "https://host:6443"},
		{name: "path kept", in: "https://rancher.example/k8s/clusters/c-1", want: "https://rancher.example/k8s/clusters/c-1"},
		{name: "userinfo and query", in: "https://admin:S3CRET@host?x=y", want: "https://host"},
		{name: "user only", in: "https://S3CRET@host:443/p", want: "https://host:443/p"},
		{name: "fragment", in: "https://host#S3CRET", want: "https://host"},
		{name: "unparseable", in: "https://adm in:S3CRET@host%zz", want: "<unparseable server URL>"},
		{name: "no host", in: "S3CRET", want: "<unparseable server URL>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RedactServer(tt.in); got != tt.want {
				t.Fatalf("RedactServer(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
