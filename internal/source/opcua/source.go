package opcua

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/custos-iot/custos/internal/source"
)

// Run subscribes to the nodes and emits readings until ctx is done or
// emit fails, reconnecting with backoff. A reading is emitted only if it
// is newer than the last one of its stream, starting from resume.
func (s *Source) Run(ctx context.Context, resume map[string]int64, emit source.Emit) error {
	last := make(map[string]int64, len(s.keys))
	for _, k := range s.keys {
		if t, ok := resume[k]; ok {
			last[k] = t
		}
	}
	backoff := time.Duration(s.cfg.MinBackoff)
	for ctx.Err() == nil {
		good, err := s.session(ctx, last, emit)
		var ee emitError
		if errors.As(err, &ee) {
			return ee.err
		}
		if ctx.Err() != nil {
			break
		}
		s.failures.Add(1)
		if good {
			backoff = time.Duration(s.cfg.MinBackoff)
		}
		s.cfg.Log.Warn("opcua: connection lost or refused; reconnecting", "endpoint", s.cfg.Endpoint, "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff = min(2*backoff, time.Duration(s.cfg.MaxBackoff))
	}
	return nil
}

type emitError struct{ err error }

func (e emitError) Error() string { return "opcua: emit: " + e.err.Error() }
func (e emitError) Unwrap() error { return e.err }

var errLost = errors.New("opcua: connection to the server lost")

// clientOptions selects the endpoint and returns the client's options.
func (s *Source) clientOptions(ctx context.Context) ([]opcua.Option, error) {
	tctx, cancel := context.WithTimeout(ctx, time.Duration(s.cfg.RequestTimeout))
	defer cancel()
	eps, err := opcua.GetEndpoints(tctx, s.cfg.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("opcua: get endpoints: %w", err)
	}
	policy, mode := ua.SecurityPolicyURIBasic256Sha256, ua.MessageSecurityModeSignAndEncrypt
	if s.cfg.Security == SecurityNone {
		policy, mode = ua.SecurityPolicyURINone, ua.MessageSecurityModeNone
	}
	tok := ua.UserTokenTypeCertificate
	if s.cfg.Auth == AuthAnonymous {
		tok = ua.UserTokenTypeAnonymous
	}
	var ep *ua.EndpointDescription
	for _, e := range eps {
		if e.SecurityPolicyURI != policy || e.SecurityMode != mode {
			continue
		}
		for _, t := range e.UserIdentityTokens {
			if t.TokenType == tok {
				ep = e
			}
		}
	}
	if ep == nil {
		return nil, fmt.Errorf("opcua: the server offers no endpoint with policy %s, mode %s and %s user tokens", policy, mode, tok)
	}
	opts := []opcua.Option{
		opcua.AutoReconnect(false),
		opcua.RequestTimeout(time.Duration(s.cfg.RequestTimeout)),
		opcua.DialTimeout(time.Duration(s.cfg.RequestTimeout)),
		opcua.ApplicationName("Custos agent"),
		opcua.SessionName("custos-agent"),
	}
	if s.cfg.Security == SecurityNone {
		return append(opts, opcua.SecurityFromEndpoint(ep, tok)), nil
	}
	pinned, err := s.serverCert(ep.ServerCertificate)
	if err != nil {
		return nil, err
	}
	opts = append(opts, opcua.Certificate(s.cert), opcua.PrivateKey(s.key))
	if tok == ua.UserTokenTypeCertificate {
		opts = append(opts, opcua.AuthCertificate(s.cert), opcua.AuthPrivateKey(s.key))
	}
	// SecurityFromEndpoint takes the certificate from the unauthenticated
	// endpoint list; the pinned one replaces it.
	return append(opts, opcua.SecurityFromEndpoint(ep, tok), opcua.RemoteCertificate(pinned)), nil
}

// session connects once, subscribes and emits until an error. good
// reports whether at least one notification arrived.
func (s *Source) session(ctx context.Context, last map[string]int64, emit source.Emit) (good bool, err error) {
	opts, err := s.clientOptions(ctx)
	if err != nil {
		return false, err
	}
	lost := make(chan struct{}, 1)
	opts = append(opts, opcua.StateChangedFunc(func(st opcua.ConnState) {
		if st == opcua.Disconnected || st == opcua.Closed {
			select {
			case lost <- struct{}{}:
			default:
			}
		}
	}))
	c, err := opcua.NewClient(s.cfg.Endpoint, opts...)
	if err != nil {
		return false, fmt.Errorf("opcua: client: %w", err)
	}
	tctx, cancel := context.WithTimeout(ctx, time.Duration(s.cfg.RequestTimeout))
	err = c.Connect(tctx)
	cancel()
	if err != nil {
		c.Close(context.Background())
		return false, fmt.Errorf("opcua: connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c.Close(cctx)
	}()

	notes := make(chan *opcua.PublishNotificationData, 64)
	tctx, cancel = context.WithTimeout(ctx, time.Duration(s.cfg.RequestTimeout))
	defer cancel()
	sub, err := c.Subscribe(tctx, &opcua.SubscriptionParameters{Interval: time.Duration(s.cfg.PublishInterval)}, notes)
	if err != nil {
		return false, fmt.Errorf("opcua: subscribe: %w", err)
	}
	items := make([]*ua.MonitoredItemCreateRequest, len(s.nodes))
	for i, n := range s.nodes {
		items[i] = opcua.NewMonitoredItemCreateRequestWithDefaults(n, ua.AttributeIDValue, uint32(i))
		items[i].RequestedParameters.SamplingInterval = float64(time.Duration(s.cfg.SamplingInterval) / time.Millisecond)
		items[i].RequestedParameters.QueueSize = s.cfg.QueueSize
	}
	res, err := sub.Monitor(tctx, ua.TimestampsToReturnBoth, items...)
	if err != nil {
		return false, fmt.Errorf("opcua: create monitored items: %w", err)
	}
	if len(res.Results) != len(items) {
		return false, fmt.Errorf("opcua: create monitored items: %d results for %d items", len(res.Results), len(items))
	}
	monitored := 0
	for i, r := range res.Results {
		if r.StatusCode != ua.StatusOK {
			s.cfg.Log.Warn("opcua: node not monitored", "endpoint", s.cfg.Endpoint, "node", s.cfg.Nodes[i].NodeID, "status", r.StatusCode)
			continue
		}
		monitored++
	}
	if monitored == 0 {
		return false, errors.New("opcua: the server refused to monitor every node")
	}
	cancel()
	s.connects.Add(1)
	s.connected.Store(true)
	defer s.connected.Store(false)
	s.cfg.Log.Info("opcua: subscribed", "endpoint", s.cfg.Endpoint, "nodes", monitored)

	probe := time.NewTicker(time.Duration(s.cfg.ProbeEvery))
	defer probe.Stop()
	state := ua.NewNumericNodeID(0, id.Server_ServerStatus_State)
	for {
		select {
		case <-ctx.Done():
			return good, nil
		case <-lost:
			return good, errLost
		case <-probe.C:
			pctx, cancel := context.WithTimeout(ctx, time.Duration(s.cfg.RequestTimeout))
			r, err := c.Read(pctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: state, AttributeID: ua.AttributeIDValue}}})
			cancel()
			if err != nil {
				return good, fmt.Errorf("opcua: probe: %w", err)
			}
			if r.ResponseHeader != nil && r.ResponseHeader.ServiceResult != ua.StatusOK {
				return good, fmt.Errorf("opcua: probe: %w", r.ResponseHeader.ServiceResult)
			}
		case n := <-notes:
			if n.Error != nil {
				return good, fmt.Errorf("opcua: subscription: %w", n.Error)
			}
			switch v := n.Value.(type) {
			case *ua.DataChangeNotification:
				good = true
				if err := s.dataChange(v, last, emit); err != nil {
					return good, err
				}
			case *ua.StatusChangeNotification:
				// The server ended the subscription (e.g. it timed
				// out): start over with a new one.
				return good, fmt.Errorf("opcua: subscription status %v", v.Status)
			}
		}
	}
}

// dataChange emits the readings of one data change notification.
func (s *Source) dataChange(n *ua.DataChangeNotification, last map[string]int64, emit source.Emit) error {
	rs := make([]source.Reading, 0, len(n.MonitoredItems))
	for _, it := range n.MonitoredItems {
		if it == nil || int(it.ClientHandle) >= len(s.keys) {
			continue
		}
		s.notifications.Add(1)
		r, why := convert(it.Value, s.cfg.Now)
		k := s.keys[it.ClientHandle]
		if why == "" {
			if prev, ok := last[k]; ok && r.Time <= prev {
				why = ReasonStale
			}
		}
		if why != "" {
			s.drop(why)
			s.cfg.Log.Debug("opcua: value dropped", "stream", k, "reason", string(why))
			continue
		}
		last[k] = r.Time
		rs = append(rs, source.Reading{Key: k, Reading: r})
	}
	if len(rs) == 0 {
		return nil
	}
	// A notification may carry several values of one stream, oldest
	// first; the spool keeps them in order.
	if err := emit(rs); err != nil {
		return emitError{err}
	}
	s.readingsSent.Add(uint64(len(rs)))
	return nil
}
