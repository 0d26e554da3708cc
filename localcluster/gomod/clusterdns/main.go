// clusterdns answers the cluster's DNS names for real nodes' pods: the A records of Services
// (<svc>.<ns>.svc.<domain>: the ClusterIP, or each ready endpoint of a headless Service) and of
// named endpoints of headless Services (<hostname>.<svc>.<ns>.svc.<domain>), from Services and
// EndpointSlices watched through client-go. It is the part of CoreDNS's kubernetes plugin the
// project uses, on the maintained miekg/dns library; names outside the cluster domain get
// NXDOMAIN at once (pods here have no upstream network to forward to).
package main

import (
	"flag"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

type server struct {
	domain   string
	ttl      uint32
	services cache.Store
	slices   cache.Store
	mu       sync.Mutex
}

// lookup returns the addresses of a name inside the cluster domain and whether the name exists.
func (s *server) lookup(name string) ([]net.IP, bool) {
	suffix := ".svc." + s.domain + "."
	if !strings.HasSuffix(name, suffix) {
		return nil, false
	}
	labels := strings.Split(strings.TrimSuffix(name, suffix), ".")
	var host, svc, ns string
	switch len(labels) {
	case 2:
		svc, ns = labels[0], labels[1]
	case 3:
		host, svc, ns = labels[0], labels[1], labels[2]
	default:
		return nil, false
	}
	obj, ok, err := s.services.GetByKey(ns + "/" + svc)
	if err != nil || !ok {
		return nil, false
	}
	service := obj.(*corev1.Service)
	headless := service.Spec.ClusterIP == corev1.ClusterIPNone
	if host == "" && !headless {
		if ip := net.ParseIP(service.Spec.ClusterIP); ip != nil {
			return []net.IP{ip}, true
		}
		return nil, true
	}
	if !headless {
		return nil, false
	}
	var ips []net.IP
	found := host == ""
	for _, o := range s.slices.List() {
		es := o.(*discoveryv1.EndpointSlice)
		if es.Namespace != ns || es.Labels[discoveryv1.LabelServiceName] != svc {
			continue
		}
		for _, ep := range es.Endpoints {
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			if !ready && !service.Spec.PublishNotReadyAddresses {
				continue
			}
			if host != "" && (ep.Hostname == nil || *ep.Hostname != host) {
				continue
			}
			found = true
			for _, a := range ep.Addresses {
				if ip := net.ParseIP(a); ip != nil && ip.To4() != nil {
					ips = append(ips, ip)
				}
			}
		}
	}
	return ips, found
}

func (s *server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	ips, exists := s.lookup(name)
	if !exists {
		m.Rcode = dns.RcodeNameError
	} else if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
		for _, ip := range ips {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: s.ttl},
				A:   ip.To4(),
			})
		}
	}
	_ = w.WriteMsg(m)
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of an identity that may list/watch Services and EndpointSlices")
	listen := flag.String("listen", "127.0.0.1:53", "UDP and TCP address to serve on")
	domain := flag.String("domain", "cluster.local", "cluster domain")
	ttl := flag.Uint("ttl", 5, "TTL of answers, seconds")
	flag.Parse()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("kubeconfig: %v", err)
	}
	client := kubernetes.NewForConfigOrDie(cfg)
	factory := informers.NewSharedInformerFactory(client, 10*time.Minute)
	svcInf := factory.Core().V1().Services().Informer()
	sliceInf := factory.Discovery().V1().EndpointSlices().Informer()
	stop := make(chan struct{})
	factory.Start(stop)
	if !cache.WaitForCacheSync(stop, svcInf.HasSynced, sliceInf.HasSynced) {
		log.Fatal("informer caches did not sync")
	}
	s := &server{domain: strings.TrimSuffix(*domain, "."), ttl: uint32(*ttl),
		services: svcInf.GetStore(), slices: sliceInf.GetStore()}
	errs := make(chan error, 2)
	for _, network := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: *listen, Net: network, Handler: s}
		go func() { errs <- srv.ListenAndServe() }()
	}
	log.Printf("serving %s on %s", s.domain, *listen)
	log.Fatal(<-errs)
}
