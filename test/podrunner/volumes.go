package podrunner

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Labels and annotations of the PersistentVolumes the runner creates.
const (
	LabelPVNode          = "herald.dev/podrunner-node"
	AnnotationProvidedBy = "pv.kubernetes.io/provisioned-by"
	provisionerName      = "herald-podrunner"
)

// podVolumes are the folders of a pod's volumes.
type podVolumes struct {
	dirs      map[string]string // volume name → folder
	hashes    map[string][32]byte
	tokens    map[string]tokenEntry // projected serviceAccountToken sources, by volume/path
	refreshAt time.Time             // the earliest token refresh
}

type tokenEntry struct {
	token     string
	refreshAt time.Time
}

type file struct {
	data []byte
	mode os.FileMode
}

// setupVolumes makes every volume's folder (binding PVCs on the way).
func (w *worker) setupVolumes(pod *corev1.Pod) error {
	if w.vols == nil {
		w.vols = &podVolumes{dirs: map[string]string{}, hashes: map[string][32]byte{}, tokens: map[string]tokenEntry{}}
	}
	root := filepath.Join(w.dir, "volumes")
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		dir := filepath.Join(root, v.Name)
		switch {
		case v.EmptyDir != nil, v.Ephemeral != nil:
			// A generic ephemeral volume lives as long as the pod: an emptyDir here.
			if err := os.MkdirAll(dir, 0o777); err != nil {
				return err
			}
		case v.HostPath != nil:
			dir = v.HostPath.Path
			if t := v.HostPath.Type; t != nil && *t == corev1.HostPathDirectoryOrCreate {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
			}
		case v.PersistentVolumeClaim != nil:
			p, err := w.r.bindClaim(w.ctx, pod.Namespace, v.PersistentVolumeClaim.ClaimName)
			if err != nil {
				return fmt.Errorf("volume %q: %w", v.Name, err)
			}
			dir = p
		case v.ConfigMap != nil, v.Secret != nil, v.DownwardAPI != nil, v.Projected != nil:
			if err := w.writeVolume(pod, v, dir); err != nil {
				return fmt.Errorf("MountVolume.SetUp failed for volume %q: %w", v.Name, err)
			}
		default:
			return fmt.Errorf("volume %q: this volume type is not supported by the local pod runner (emptyDir, hostPath, persistentVolumeClaim, configMap, secret, downwardAPI, projected and ephemeral are)", v.Name)
		}
		w.vols.dirs[v.Name] = dir
	}
	return nil
}

// updateVolumes rewrites the ConfigMap, Secret, downward API and projected volumes whose content
// changed, and refreshes tokens that are due.
func (w *worker) updateVolumes(pod *corev1.Pod) error {
	var errs []error
	w.vols.refreshAt = time.Time{}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		if v.ConfigMap == nil && v.Secret == nil && v.DownwardAPI == nil && v.Projected == nil {
			continue
		}
		if err := w.writeVolume(pod, v, w.vols.dirs[v.Name]); err != nil {
			errs = append(errs, fmt.Errorf("volume %q: %w", v.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (w *worker) writeVolume(pod *corev1.Pod, v *corev1.Volume, dir string) error {
	files, err := w.volumeFiles(pod, v)
	if err != nil {
		return err
	}
	h := hashFiles(files)
	if old, ok := w.vols.hashes[v.Name]; ok && old == h {
		return nil
	}
	if err := atomicWriteDir(dir, files); err != nil {
		return err
	}
	w.vols.hashes[v.Name] = h
	return nil
}

func hashFiles(files map[string]file) [32]byte {
	h := sha256.New()
	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%d:%s%o%d:", len(k), k, files[k].mode, len(files[k].data))
		h.Write(files[k].data)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// volumeFiles is the content of a ConfigMap, Secret, downward API or projected volume.
func (w *worker) volumeFiles(pod *corev1.Pod, v *corev1.Volume) (map[string]file, error) {
	files := map[string]file{}
	switch {
	case v.ConfigMap != nil:
		return files, w.addConfigMap(pod.Namespace, files, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, mode(v.ConfigMap.DefaultMode))
	case v.Secret != nil:
		return files, w.addSecret(pod.Namespace, files, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, mode(v.Secret.DefaultMode))
	case v.DownwardAPI != nil:
		return files, w.addDownward(pod, files, v.DownwardAPI.Items, mode(v.DownwardAPI.DefaultMode))
	case v.Projected != nil:
		def := mode(v.Projected.DefaultMode)
		for i, s := range v.Projected.Sources {
			var err error
			switch {
			case s.ConfigMap != nil:
				err = w.addConfigMap(pod.Namespace, files, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, def)
			case s.Secret != nil:
				err = w.addSecret(pod.Namespace, files, s.Secret.Name, s.Secret.Items, s.Secret.Optional, def)
			case s.DownwardAPI != nil:
				err = w.addDownward(pod, files, s.DownwardAPI.Items, def)
			case s.ServiceAccountToken != nil:
				var tok string
				tok, err = w.projectedToken(pod, fmt.Sprintf("%s/%d", v.Name, i), s.ServiceAccountToken)
				if err == nil {
					files[s.ServiceAccountToken.Path] = file{[]byte(tok), 0o600}
				}
			default:
				err = fmt.Errorf("projected source %d: only configMap, secret, downwardAPI and serviceAccountToken sources are supported", i)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return files, nil
}

func mode(m *int32) os.FileMode {
	if m == nil {
		return 0o644
	}
	return os.FileMode(*m)
}

func itemMode(m *int32, def os.FileMode) os.FileMode {
	if m == nil {
		return def
	}
	return os.FileMode(*m)
}

func (w *worker) configMap(ns, name string) (*corev1.ConfigMap, error) {
	if o, ok, _ := w.r.cms.GetIndexer().GetByKey(ns + "/" + name); ok {
		return o.(*corev1.ConfigMap), nil
	}
	return w.r.cs.CoreV1().ConfigMaps(ns).Get(w.ctx, name, metav1.GetOptions{})
}

func (w *worker) secret(ns, name string) (*corev1.Secret, error) {
	if o, ok, _ := w.r.secrets.GetIndexer().GetByKey(ns + "/" + name); ok {
		return o.(*corev1.Secret), nil
	}
	return w.r.cs.CoreV1().Secrets(ns).Get(w.ctx, name, metav1.GetOptions{})
}

func (w *worker) addConfigMap(ns string, files map[string]file, name string, items []corev1.KeyToPath, optional *bool, def os.FileMode) error {
	cm, err := w.configMap(ns, name)
	if apierrors.IsNotFound(err) {
		if ptr.Deref(optional, false) {
			return nil
		}
		return fmt.Errorf("configmap %q not found", name)
	}
	if err != nil {
		return err
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return addKeys(files, data, items, optional, def, "configmap "+name)
}

func (w *worker) addSecret(ns string, files map[string]file, name string, items []corev1.KeyToPath, optional *bool, def os.FileMode) error {
	s, err := w.secret(ns, name)
	if apierrors.IsNotFound(err) {
		if ptr.Deref(optional, false) {
			return nil
		}
		return fmt.Errorf("secret %q not found", name)
	}
	if err != nil {
		return err
	}
	return addKeys(files, s.Data, items, optional, def, "secret "+name)
}

func addKeys(files map[string]file, data map[string][]byte, items []corev1.KeyToPath, optional *bool, def os.FileMode, what string) error {
	if len(items) == 0 {
		for k, v := range data {
			files[k] = file{v, def}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if ptr.Deref(optional, false) {
				continue
			}
			return fmt.Errorf("%s has no key %q", what, it.Key)
		}
		files[it.Path] = file{v, itemMode(it.Mode, def)}
	}
	return nil
}

func (w *worker) addDownward(pod *corev1.Pod, files map[string]file, items []corev1.DownwardAPIVolumeFile, def os.FileMode) error {
	for _, it := range items {
		var val string
		var err error
		switch {
		case it.FieldRef != nil:
			val, err = w.fieldValue(pod, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			val, err = w.resourceValue(pod, it.ResourceFieldRef, "")
		}
		if err != nil {
			return err
		}
		files[it.Path] = file{[]byte(val), itemMode(it.Mode, def)}
	}
	return nil
}

// atomicWriteDir writes files into dir the way the kubelet does: into a fresh hidden folder that
// the symlink ..data then points to, with a symlink per top-level entry into ..data, so readers
// always see one consistent version.
func atomicWriteDir(dir string, files map[string]file) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ts, err := os.MkdirTemp(dir, ".."+time.Now().Format("2006_01_02_15_04_05.")) //nolint:usetesting
	if err != nil {
		return err
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return err
	}
	top := map[string]bool{}
	for p, f := range files {
		clean := path.Clean("/" + p)[1:]
		if clean == "" || strings.HasPrefix(clean, "..") {
			return fmt.Errorf("invalid path %q", p)
		}
		target := filepath.Join(ts, clean)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(target, f.data, f.mode.Perm()); err != nil {
			return err
		}
		if err := os.Chmod(target, f.mode.Perm()); err != nil {
			return err
		}
		top[strings.SplitN(clean, "/", 2)[0]] = true
	}
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(ts), tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == "..data" || name == filepath.Base(ts):
		case strings.HasPrefix(name, ".."):
			_ = os.RemoveAll(filepath.Join(dir, name)) // older versions
		case !top[name] && e.Type()&os.ModeSymlink != 0:
			_ = os.Remove(filepath.Join(dir, name)) // a key that is gone
		}
	}
	for name := range top {
		link := filepath.Join(dir, name)
		if t, err := os.Readlink(link); err == nil && t == filepath.Join("..data", name) {
			continue
		}
		_ = os.RemoveAll(link)
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			return err
		}
	}
	return nil
}

// --- PersistentVolumeClaims ------------------------------------------------------------------

// bindClaim binds claim ns/name to a folder (through a hostPath PersistentVolume pvc-<uid>) and
// returns the folder. A bound claim keeps its volume and folder.
func (r *Runner) bindClaim(ctx context.Context, ns, name string) (string, error) {
	claims := r.cs.CoreV1().PersistentVolumeClaims(ns)
	pvc, err := claims.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("persistentvolumeclaim %q not found", name)
	}
	if err != nil {
		return "", err
	}
	if pvc.DeletionTimestamp != nil {
		return "", fmt.Errorf("persistentvolumeclaim %q is being deleted", name)
	}
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		return "", fmt.Errorf("persistentvolumeclaim %q: block volumes are not supported", name)
	}
	pvs := r.cs.CoreV1().PersistentVolumes()
	if pvc.Spec.VolumeName != "" {
		pv, err := pvs.Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("persistentvolumeclaim %q: volume %s: %w", name, pvc.Spec.VolumeName, err)
		}
		dir := ""
		switch {
		case pv.Spec.HostPath != nil:
			dir = pv.Spec.HostPath.Path
		case pv.Spec.Local != nil:
			dir = pv.Spec.Local.Path
		default:
			return "", fmt.Errorf("persistentvolumeclaim %q: volume %s is neither hostPath nor local", name, pv.Name)
		}
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return "", err
		}
		return dir, r.markBound(ctx, pvc, pv)
	}

	dir := filepath.Join(r.o.StateDir, "volumes", ns, name+"-"+string(pvc.UID)[:8])
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return "", err
	}
	size, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok {
		size = resource.MustParse("1Gi")
	}
	modes := pvc.Spec.AccessModes
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        "pvc-" + string(pvc.UID),
			Labels:      map[string]string{LabelPVNode: r.o.NodeName},
			Annotations: map[string]string{AnnotationProvidedBy: provisionerName},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   modes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              ptr.Deref(pvc.Spec.StorageClassName, ""),
			VolumeMode:                    ptr.To(corev1.PersistentVolumeFilesystem),
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: ptr.To(corev1.HostPathDirectoryOrCreate)},
			},
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
		},
	}
	created, err := pvs.Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = pvs.Get(ctx, pv.Name, metav1.GetOptions{})
	}
	if err != nil {
		return "", fmt.Errorf("persistentvolumeclaim %q: creating its volume: %w", name, err)
	}
	if pvc.Annotations == nil {
		pvc.Annotations = map[string]string{}
	}
	pvc.Annotations["pv.kubernetes.io/bind-completed"] = "yes"
	pvc.Annotations["pv.kubernetes.io/bound-by-controller"] = "yes"
	pvc.Spec.VolumeName = created.Name
	pvc, err = claims.Update(ctx, pvc, metav1.UpdateOptions{})
	if err != nil {
		return "", fmt.Errorf("persistentvolumeclaim %q: binding: %w", name, err)
	}
	r.o.Logger.Info("bound claim", "claim", ns+"/"+name, "volume", created.Name, "dir", dir)
	return dir, r.markBound(ctx, pvc, created)
}

// markBound sets the Bound phase on both objects (the persistent volume controller's job).
func (r *Runner) markBound(ctx context.Context, pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) error {
	if pv.Status.Phase != corev1.VolumeBound {
		pv.Status.Phase = corev1.VolumeBound
		if _, err := r.cs.CoreV1().PersistentVolumes().UpdateStatus(ctx, pv, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
			return err
		}
	}
	if pvc.Status.Phase != corev1.ClaimBound {
		pvc.Status.Phase = corev1.ClaimBound
		pvc.Status.AccessModes = pv.Spec.AccessModes
		pvc.Status.Capacity = pv.Spec.Capacity
		if _, err := r.cs.CoreV1().PersistentVolumeClaims(pvc.Namespace).UpdateStatus(ctx, pvc, metav1.UpdateOptions{}); err != nil {
			if apierrors.IsConflict(err) {
				fresh, gerr := r.cs.CoreV1().PersistentVolumeClaims(pvc.Namespace).Get(ctx, pvc.Name, metav1.GetOptions{})
				if gerr != nil {
					return gerr
				}
				return r.markBound(ctx, fresh, pv)
			}
			return err
		}
	}
	return nil
}

// onClaimDelete reclaims (deletes) the volume the runner made for a deleted claim, and its folder.
func (r *Runner) onClaimDelete(o any) {
	m := metaOf(o)
	if m == nil {
		return
	}
	r.mu.Lock()
	stopped := r.stopped
	r.mu.Unlock()
	if stopped {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		pvs := r.cs.CoreV1().PersistentVolumes()
		pv, err := pvs.Get(r.ctx, "pvc-"+string(m.GetUID()), metav1.GetOptions{})
		if err != nil || pv.Annotations[AnnotationProvidedBy] != provisionerName || pv.Spec.HostPath == nil {
			return
		}
		dir := pv.Spec.HostPath.Path
		if !strings.HasPrefix(dir, filepath.Join(r.o.StateDir, "volumes")+string(filepath.Separator)) {
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			r.o.Logger.Warn("removing a volume folder", "dir", dir, "err", err)
		}
		// Released, then deleted; the PV protection finalizer goes too (it holds a Bound volume).
		for attempt := 0; attempt < 10; attempt++ {
			if attempt > 0 {
				time.Sleep(200 * time.Millisecond)
				fresh, err := pvs.Get(r.ctx, pv.Name, metav1.GetOptions{})
				if err != nil {
					break
				}
				pv = fresh
			}
			if pv.Status.Phase == corev1.VolumeBound {
				pv.Status.Phase = corev1.VolumeReleased
				updated, err := pvs.UpdateStatus(r.ctx, pv, metav1.UpdateOptions{})
				if err != nil {
					continue
				}
				pv = updated
			}
			if pv.DeletionTimestamp == nil {
				if err := pvs.Delete(r.ctx, pv.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					continue
				}
			}
			if slices.Contains(pv.Finalizers, "kubernetes.io/pv-protection") {
				pv.Finalizers = slices.DeleteFunc(pv.Finalizers, func(f string) bool { return f == "kubernetes.io/pv-protection" })
				if _, err := pvs.Update(r.ctx, pv, metav1.UpdateOptions{}); err != nil {
					if apierrors.IsNotFound(err) {
						break
					}
					continue
				}
			}
			break
		}
		r.o.Logger.Info("reclaimed volume", "volume", pv.Name, "claim", m.GetNamespace()+"/"+m.GetName())
	}()
}
