package kubetest

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/horizon-mesh/horizon/cmd/localmesh"
)

// The local-cluster runner, under the names tests use. See package localmesh.

// Versions of the binaries the runner starts.
const (
	EtcdVersion = localmesh.EtcdVersion
	KubeVersion = localmesh.KubeVersion
)

// ReaderRole is localmesh.ReaderRole.
const ReaderRole = localmesh.ReaderRole

type (
	// Environment is localmesh.Environment: one etcd and the clusters started on it.
	Environment = localmesh.Environment
	// Cluster is localmesh.Cluster: one running kube-apiserver.
	Cluster = localmesh.Cluster
	// Token is localmesh.Token: a real service-account token.
	Token = localmesh.Token
	// Service is localmesh.Service: a service and its backends for Deploy.
	Service = localmesh.Service
	// Backend is localmesh.Backend: one pod behind a Service.
	Backend = localmesh.Backend
	// ClusterOptions is localmesh.ClusterOptions: what runs next to an API server.
	ClusterOptions = localmesh.ClusterOptions
)

// BinDir is localmesh.BinDir.
func BinDir() string { return localmesh.BinDir() }

// Start is localmesh.Start: etcd in a fresh temporary directory.
func Start() (*Environment, error) { return localmesh.Start() }

// FreeAddrs is localmesh.FreeAddrs.
func FreeAddrs(n int) ([]string, error) { return localmesh.FreeAddrs(n) }

// KubeconfigFor is localmesh.KubeconfigFor.
func KubeconfigFor(name, server string, caData []byte, token string) ([]byte, error) {
	return localmesh.KubeconfigFor(name, server, caData, token)
}

// ParseManifests is localmesh.ParseManifests.
func ParseManifests(data []byte) ([]*unstructured.Unstructured, error) {
	return localmesh.ParseManifests(data)
}

// ApplyFile is localmesh.ApplyFile.
func ApplyFile(ctx context.Context, cfg *rest.Config, path string) error {
	return localmesh.ApplyFile(ctx, cfg, path)
}

// Apply is localmesh.Apply.
func Apply(ctx context.Context, cfg *rest.Config, data []byte) error {
	return localmesh.Apply(ctx, cfg, data)
}

// Deploy is localmesh.Deploy.
func Deploy(ctx context.Context, cs kubernetes.Interface, s Service) error {
	return localmesh.Deploy(ctx, cs, s)
}

// DeployPods is localmesh.DeployPods: the Service and Pods, for a cluster whose
// EndpointSlice controller makes the slices.
func DeployPods(ctx context.Context, cs kubernetes.Interface, s Service) error {
	return localmesh.DeployPods(ctx, cs, s)
}

// SetPodStatus is localmesh.SetPodStatus.
func SetPodStatus(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, ip string, ready bool) error {
	return localmesh.SetPodStatus(ctx, cs, pod, ip, ready)
}

// EnsureNamespace is localmesh.EnsureNamespace.
func EnsureNamespace(ctx context.Context, cs kubernetes.Interface, name string, labels map[string]string) error {
	return localmesh.EnsureNamespace(ctx, cs, name, labels)
}

// CreateNode is localmesh.CreateNode.
func CreateNode(ctx context.Context, cs kubernetes.Interface, name, region, zone, subzone string) error {
	return localmesh.CreateNode(ctx, cs, name, region, zone, subzone)
}
