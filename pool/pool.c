/* pool/pool.c: being written */
