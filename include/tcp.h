/*
 * tcp.h - socket options the HTTP servers need.
 */
#ifndef ABILITYSYNC_TCP_H
#define ABILITYSYNC_TCP_H

struct evhttp_request;

/*
 * Turns Nagle off on the request's connection. evhttp writes a reply as
 * headers then body: without this, the tail of a large body (a 3072-d vector
 * is ~40 KB) waits for the client's delayed ACK, 40 ms per reply.
 */
void tcp_nodelay(struct evhttp_request *req);

#endif
