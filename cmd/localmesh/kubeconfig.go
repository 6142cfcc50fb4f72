package localmesh

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ReaderRole is the ClusterRole bound to service accounts made by MintKubeconfig: read
// access to what a federation controller watches, nothing more.
const ReaderRole = "horizon-test-reader"

// Token is a real service-account token minted by the cluster's TokenRequest API.
type Token struct {
	Namespace      string
	ServiceAccount string
	Value          string
}

// MintToken ensures the service account namespace/name exists with read-only RBAC and
// returns a fresh token for it, valid for ttl. Each call yields a different token.
func (c *Cluster) MintToken(ctx context.Context, namespace, name string, ttl time.Duration) (Token, error) {
	if err := c.ensureReader(ctx, namespace, name); err != nil {
		return Token{}, err
	}
	secs := int64(ttl / time.Second)
	tr, err := c.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return Token{}, fmt.Errorf("request token for %s/%s in cluster %s: %w", namespace, name, c.Name, err)
	}
	return Token{Namespace: namespace, ServiceAccount: name, Value: tr.Status.Token}, nil
}

// MintKubeconfig mints a token for service account namespace/name (see MintToken) and
// returns a kubeconfig using it with the cluster's CA: the credential a user puts in a
// remote secret.
func (c *Cluster) MintKubeconfig(ctx context.Context, namespace, name string) ([]byte, Token, error) {
	tok, err := c.MintToken(ctx, namespace, name, time.Hour)
	if err != nil {
		return nil, Token{}, err
	}
	b, err := c.Kubeconfig(tok.Value)
	return b, tok, err
}

// Kubeconfig returns a kubeconfig for this cluster that authenticates with token.
func (c *Cluster) Kubeconfig(token string) ([]byte, error) {
	return KubeconfigFor(c.Name, c.Host, c.CAData, token)
}

// KubeconfigFor returns a single-context kubeconfig for server with the given CA bundle
// and bearer token.
func KubeconfigFor(name, server string, caData []byte, token string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caData}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	return clientcmd.Write(*cfg)
}

// RevokeServiceAccount deletes the service account; every token minted for it stops
// authenticating.
func (c *Cluster) RevokeServiceAccount(ctx context.Context, namespace, name string) error {
	return c.Client.CoreV1().ServiceAccounts(namespace).Delete(ctx, name, metav1.DeleteOptions{})
}

func (c *Cluster) ensureReader(ctx context.Context, namespace, name string) error {
	create := func(err error) error {
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		return nil
	}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); create(err) != nil {
		return fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	if _, err := c.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); create(err) != nil {
		return fmt.Errorf("create service account %s/%s: %w", namespace, name, err)
	}
	if err := c.ensureReaderRole(ctx); err != nil {
		return err
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ReaderRole + "-" + namespace + "-" + name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: ReaderRole},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: namespace, Name: name}},
	}
	if _, err := c.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); create(err) != nil {
		return fmt.Errorf("create cluster role binding: %w", err)
	}
	return nil
}

// ensureReaderRole creates ReaderRole if it does not exist.
func (c *Cluster) ensureReaderRole(ctx context.Context) error {
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: ReaderRole},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "pods", "nodes", "namespaces", "secrets", "configmaps"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceexports"}, Verbs: []string{"list", "watch"}},
		},
	}
	if _, err := c.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create cluster role: %w", err)
	}
	return nil
}
