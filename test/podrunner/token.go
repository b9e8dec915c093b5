package podrunner

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
)

// automount says whether the pod gets its ServiceAccount's credentials (the pod's
// automountServiceAccountToken, else the ServiceAccount's, else true).
func (w *worker) automount(pod *corev1.Pod) (bool, error) {
	if pod.Spec.AutomountServiceAccountToken != nil {
		return *pod.Spec.AutomountServiceAccountToken, nil
	}
	sa, err := w.r.cs.CoreV1().ServiceAccounts(pod.Namespace).Get(w.ctx, serviceAccount(pod), metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("service account %q: %w", serviceAccount(pod), err)
	}
	return ptr.Deref(sa.AutomountServiceAccountToken, true), nil
}

func serviceAccount(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return "default"
}

// requestToken asks the TokenRequest API for a token of the pod's ServiceAccount, bound to the
// pod (it stops working when the pod is deleted). It returns when to refresh it (80% of its
// lifetime, as the kubelet does).
func (w *worker) requestToken(pod *corev1.Pod, audiences []string, seconds int64) (string, time.Time, error) {
	if seconds < 600 {
		seconds = 3600
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         audiences,
		ExpirationSeconds: ptr.To(seconds),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	now := time.Now()
	res, err := w.r.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(w.ctx, serviceAccount(pod), tr, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, err
	}
	life := res.Status.ExpirationTimestamp.Sub(now)
	if life <= 0 {
		life = time.Duration(seconds) * time.Second
	}
	return res.Status.Token, now.Add(life * 8 / 10), nil
}

// projectedToken is the token of a projected serviceAccountToken source, requested again when due.
func (w *worker) projectedToken(pod *corev1.Pod, key string, src *corev1.ServiceAccountTokenProjection) (string, error) {
	if e, ok := w.vols.tokens[key]; ok && time.Now().Before(e.refreshAt) {
		w.noteRefresh(e.refreshAt)
		return e.token, nil
	}
	var aud []string
	if src.Audience != "" {
		aud = []string{src.Audience}
	}
	tok, refresh, err := w.requestToken(pod, aud, ptr.Deref(src.ExpirationSeconds, 3600))
	if err != nil {
		return "", fmt.Errorf("service account token: %w", err)
	}
	w.vols.tokens[key] = tokenEntry{tok, refresh}
	w.noteRefresh(refresh)
	return tok, nil
}

func (w *worker) noteRefresh(t time.Time) {
	if w.vols.refreshAt.IsZero() || t.Before(w.vols.refreshAt) {
		w.vols.refreshAt = t
	}
}

// writeKubeconfig writes <pod>/kubeconfig (named by KUBECONFIG in the pod's processes): the API
// server's URL and CA and a tokenFile, <pod>/serviceaccount/token, which client-go re-reads and
// the runner refreshes. Also ca.crt and namespace next to the token, like the usual mount.
func (w *worker) writeKubeconfig(pod *corev1.Pod) error {
	dir := filepath.Join(w.dir, "serviceaccount")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tok, refresh, err := w.requestToken(pod, nil, 3600)
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(dir, "token")
	if err := writeFileAtomic(tokenFile, []byte(tok), 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, "ca.crt"), w.r.o.CAData, 0o644); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, "namespace"), []byte(pod.Namespace), 0o644); err != nil {
		return err
	}
	sa := serviceAccount(pod)
	user := fmt.Sprintf("system:serviceaccount:%s:%s", pod.Namespace, sa)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: w.r.o.APIServerURL, CertificateAuthorityData: w.r.o.CAData}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{TokenFile: tokenFile}
	cfg.Contexts[user] = &clientcmdapi.Context{Cluster: "local", AuthInfo: user, Namespace: pod.Namespace}
	cfg.CurrentContext = user
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(w.dir, "kubeconfig"), b, 0o600); err != nil {
		return err
	}
	w.kcRefresh = refresh
	return nil
}

// writeFileAtomic writes data to a temporary file and renames it over path.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
