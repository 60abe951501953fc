package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/memdbd/memdbd/loadtest"
)

// runEtcdNode runs one etcd member in this process until SIGTERM:
// embed's defaults (data on disk, fsync on), quiet logs.
func runEtcdNode(args []string) error {
	if len(args) != 5 {
		return errors.New("etcd-node: name dir client-url peer-url initial-cluster")
	}
	name, dir, curl, purl, initial := args[0], args[1], args[2], args[3], args[4]
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = name, dir
	cu, err := url.Parse(curl)
	if err != nil {
		return err
	}
	pu, err := url.Parse(purl)
	if err != nil {
		return err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = initial
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		return errors.New("etcd member not ready after 60s")
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case <-sig:
	case err := <-e.Err():
		log.Printf("etcd member %s: %v", name, err)
	}
	return nil
}

// etcdTarget drives etcd through clientv3. Keys are "k/<8-byte key>".
type etcdTarget struct {
	clients []*clientv3.Client
}

func newEtcdTarget(endpoints []string, conns int) (*etcdTarget, error) {
	t := &etcdTarget{}
	for i := 0; i < conns; i++ {
		c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
		if err != nil {
			_ = t.Close()
			return nil, err
		}
		t.clients = append(t.clients, c)
	}
	return t, nil
}

func (t *etcdTarget) Name() string { return "etcd" }
func (t *etcdTarget) Conns() int   { return len(t.clients) }

func (t *etcdTarget) Setup(ctx context.Context, keys int, value []byte) error {
	c := t.clients[0]
	for i := 0; i < keys; i += 100 {
		var ops []clientv3.Op
		for j := i; j < min(i+100, keys); j++ {
			ops = append(ops, clientv3.OpPut("k/"+loadtest.KeyName(j), string(value)))
		}
		if _, err := c.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("preloading etcd: %w", err)
		}
	}
	return nil
}

func (t *etcdTarget) Do(ctx context.Context, conn int, op loadtest.Op, value []byte) error {
	c := t.clients[conn%len(t.clients)]
	key := "k/" + op.Key
	var err error
	switch op.Kind {
	case loadtest.OpWrite:
		_, err = c.Put(ctx, key, string(value))
	case loadtest.OpInsert:
		_, err = c.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, string(value))).Commit()
	case loadtest.OpRead:
		_, err = c.Get(ctx, key)
	case loadtest.OpStaleRead:
		_, err = c.Get(ctx, key, clientv3.WithSerializable())
	case loadtest.OpScan:
		_, err = c.Get(ctx, key, clientv3.WithFromKey(), clientv3.WithLimit(10))
	case loadtest.OpTxn:
		_, err = c.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).Then(clientv3.OpPut(key, string(value))).Commit()
	default:
		err = fmt.Errorf("unknown operation %v", op.Kind)
	}
	return err
}

func (t *etcdTarget) Close() error {
	var errs []error
	for _, c := range t.clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// etcdLeader returns the client URL of the current leader.
func etcdLeader(ctx context.Context, endpoints []string) (string, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		return "", err
	}
	defer c.Close()
	for _, ep := range endpoints {
		st, err := c.Status(ctx, ep)
		if err == nil && st.Leader == st.Header.MemberId {
			return ep, nil
		}
	}
	return "", errors.New("no etcd leader found: " + strings.Join(endpoints, ","))
}
