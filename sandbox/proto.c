/* sandbox/proto.c: being written */
