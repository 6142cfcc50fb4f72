package meshsource

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
)

// runConfigMap watches the one ConfigMap (a field selector on its name) and applies
// its key after every change. The informer's handlers only signal the loop, which
// reads the ConfigMap from the informer's store.
func (s *watcher) runConfigMap(ctx context.Context) {
	ns := s.namespace
	selector := fields.OneTermEqualSelector("metadata.name", ConfigMapName).String()
	configMaps := s.client.CoreV1().ConfigMaps(ns)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return configMaps.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return configMaps.Watch(ctx, o)
		},
	}
	changed := make(chan struct{}, 1)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default: // a read is already pending
		}
	}
	store, informer := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &corev1.ConfigMap{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { signal() },
			UpdateFunc: func(old, cur any) {
				o, ok1 := old.(*corev1.ConfigMap)
				c, ok2 := cur.(*corev1.ConfigMap)
				if ok1 && ok2 && o.ResourceVersion == c.ResourceVersion {
					return
				}
				signal()
			},
			DeleteFunc: func(any) { signal() },
		},
	})
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { informer.RunWithContext(ctx) })

	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return
	}
	key := ns + "/" + ConfigMapName
	read := func() {
		obj, exists, err := store.GetByKey(key)
		if err != nil {
			s.readFailed(fmt.Errorf("read ConfigMap %s from cache: %w", key, err))
			return
		}
		var data string
		if exists {
			if cm, ok := obj.(*corev1.ConfigMap); ok {
				data = cm.Data[s.key]
			}
		}
		s.apply([]byte(data))
	}
	read()
	s.synced.Store(true)
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			read()
		}
	}
}
