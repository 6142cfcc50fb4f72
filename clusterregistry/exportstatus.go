package clusterregistry

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/horizon-mesh/horizon/network"
)

// ErrNoCluster says that the registry has no cluster of that ID.
var ErrNoCluster = errors.New("no such cluster")

// serviceExportGroupVersion is the path of the ServiceExport API version the status
// is written in; every release of the mcs-api CRDs serves it.
const serviceExportGroupVersion = "multicluster.x-k8s.io/v1alpha1"

// ApplyServiceExportStatus sends body, a server-side apply patch (field manager
// "horizon", forced), to the status subresource of the ServiceExport svc in cluster
// id, through the cluster's rate-limited client. It needs only patch on
// serviceexports/status. An answer from the API server keeps its status code and a
// known reason (apierrors.IsNotFound and the like work) but never its body.
func (r *Registry) ApplyServiceExportStatus(ctx context.Context, id network.ClusterID, svc types.NamespacedName, body []byte) error {
	r.mu.RLock()
	e := r.clusters[id]
	r.mu.RUnlock()
	if e == nil {
		return fmt.Errorf("cluster %q: %w", id, ErrNoCluster)
	}
	c := e.active
	err := c.client.CoreV1().RESTClient().Patch(types.ApplyPatchType).
		AbsPath("/apis", serviceExportGroupVersion, "namespaces", svc.Namespace, "serviceexports", svc.Name, "status").
		Param("fieldManager", "horizon").Param("force", "true").
		Body(body).Do(ctx).Error()
	if err == nil {
		return nil
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		s := st.Status()
		reason := s.Reason
		if !knownReasons[reason] {
			reason = metav1.StatusReasonUnknown
		}
		return &apierrors.StatusError{ErrStatus: metav1.Status{
			Status: metav1.StatusFailure, Code: s.Code, Reason: reason, Message: errorText(err, c.token),
		}}
	}
	return errors.New(errorText(err, c.token))
}
