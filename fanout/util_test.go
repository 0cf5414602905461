package fanout_test

import (
	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/proto"
)

func protoClone(t *firestorepb.Target) *firestorepb.Target {
	return proto.Clone(t).(*firestorepb.Target)
}
