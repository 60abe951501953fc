package server

import (
	"context"
	"fmt"

	"github.com/memdbd/memdbd/api/convert"
	cmdpb "github.com/memdbd/memdbd/api/proto/memdb/command/v1"
	pb "github.com/memdbd/memdbd/api/proto/memdb/v1"
	"github.com/memdbd/memdbd/fsm"
	"github.com/memdbd/memdbd/store"
)

// schemaService serves memdb.v1.SchemaService.
type schemaService struct {
	pb.UnimplementedSchemaServiceServer
	s *Server
}

// admin proposes a schema command and returns the revision it applied at.
func (s *Server) admin(ctx context.Context, env *cmdpb.Envelope) (uint64, error) {
	if err := checkSession(env.Session); err != nil {
		return 0, err
	}
	res, err := s.propose(ctx, env)
	if err != nil {
		return 0, err
	}
	if err := fsm.ResultError(res); err != nil {
		return 0, err
	}
	return res.Revision, nil
}

// The checks of each schema change, before it is proposed: by the handler
// for a client's request, and by the leader for a proposal a member
// forwards (peer.go), so that no path into the log skips them.

func (s *Server) checkCreateTable(ctx context.Context, schema *pb.TableSchema) error {
	sc, err := convert.Schema(schema)
	if err != nil {
		return err
	}
	if err := store.CheckSchema(sc, s.limits().store()); err != nil {
		return err
	}
	return s.checkFresh(ctx, func(v *store.View) error {
		if _, err := v.Table(sc.Name); err == nil {
			return fmt.Errorf("%w: %s", store.ErrTableExists, sc.Name)
		}
		return s.limits().checkQuota(v)
	})
}

func (s *Server) checkDropTable(ctx context.Context, table string) error {
	return s.checkFresh(ctx, func(v *store.View) error { _, err := v.Table(table); return err })
}

func (s *Server) checkCreateIndex(ctx context.Context, table string, index *pb.IndexSchema) error {
	if index == nil {
		return fmt.Errorf("%w: index is required", errInvalid)
	}
	return s.checkFresh(ctx, func(v *store.View) error {
		info, err := v.Table(table)
		if err != nil {
			return err
		}
		if _, exists := info.Schema.Index(index.Name); exists {
			return fmt.Errorf("%w: %s.%s", store.ErrIndexExists, table, index.Name)
		}
		sc := info.Schema
		sc.Indexes = append(sc.Indexes, convert.Index(index))
		if err := store.CheckSchema(sc, s.limits().store()); err != nil {
			return err
		}
		return s.limits().checkQuota(v)
	})
}

func (s *Server) checkDropIndex(ctx context.Context, table, index string) error {
	return s.checkFresh(ctx, func(v *store.View) error {
		info, err := v.Table(table)
		if err != nil {
			return err
		}
		if _, ok := info.Schema.Index(index); !ok {
			return fmt.Errorf("%w: %s.%s", store.ErrIndexNotFound, table, index)
		}
		return nil
	})
}

func (sv *schemaService) CreateTable(ctx context.Context, req *pb.CreateTableRequest) (*pb.CreateTableResponse, error) {
	if err := sv.s.checkCreateTable(ctx, req.Schema); err != nil {
		return nil, toStatus(err)
	}
	rev, err := sv.s.admin(ctx, &cmdpb.Envelope{Session: req.Session, Command: &cmdpb.Envelope_CreateTable{CreateTable: req.Schema}})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.CreateTableResponse{Header: sv.s.writeHeader(rev)}, nil
}

func (sv *schemaService) DropTable(ctx context.Context, req *pb.DropTableRequest) (*pb.DropTableResponse, error) {
	if err := sv.s.checkDropTable(ctx, req.Table); err != nil {
		return nil, toStatus(err)
	}
	rev, err := sv.s.admin(ctx, &cmdpb.Envelope{Session: req.Session, Command: &cmdpb.Envelope_DropTable{DropTable: &cmdpb.DropTable{Table: req.Table}}})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.DropTableResponse{Header: sv.s.writeHeader(rev)}, nil
}

func (sv *schemaService) CreateIndex(ctx context.Context, req *pb.CreateIndexRequest) (*pb.CreateIndexResponse, error) {
	if err := sv.s.checkCreateIndex(ctx, req.Table, req.Index); err != nil {
		return nil, toStatus(err)
	}
	rev, err := sv.s.admin(ctx, &cmdpb.Envelope{Session: req.Session, Command: &cmdpb.Envelope_CreateIndex{CreateIndex: &cmdpb.CreateIndex{Table: req.Table, Index: req.Index}}})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.CreateIndexResponse{Header: sv.s.writeHeader(rev)}, nil
}

func (sv *schemaService) DropIndex(ctx context.Context, req *pb.DropIndexRequest) (*pb.DropIndexResponse, error) {
	if err := sv.s.checkDropIndex(ctx, req.Table, req.Index); err != nil {
		return nil, toStatus(err)
	}
	rev, err := sv.s.admin(ctx, &cmdpb.Envelope{Session: req.Session, Command: &cmdpb.Envelope_DropIndex{DropIndex: &cmdpb.DropIndex{Table: req.Table, Index: req.Index}}})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.DropIndexResponse{Header: sv.s.writeHeader(rev)}, nil
}

func (sv *schemaService) ListTables(ctx context.Context, req *pb.ListTablesRequest) (*pb.ListTablesResponse, error) {
	v, err := sv.s.readView(ctx, req.Read)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.ListTablesResponse{Header: sv.s.header(v)}
	for _, t := range v.Tables() {
		resp.Tables = append(resp.Tables, convert.TableInfoToPB(t))
	}
	return resp, nil
}

func (sv *schemaService) DescribeTable(ctx context.Context, req *pb.DescribeTableRequest) (*pb.DescribeTableResponse, error) {
	v, err := sv.s.readView(ctx, req.Read)
	if err != nil {
		return nil, toStatus(err)
	}
	t, err := v.Table(req.Table)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.DescribeTableResponse{Header: sv.s.header(v), Table: convert.TableInfoToPB(t)}, nil
}
