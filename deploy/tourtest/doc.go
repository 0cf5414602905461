// Package tourtest runs `make run`'s stack (deploy/run.sh) the way a newcomer does and
// checks every command of the tour it prints: a miss, a hit, a write, the invalidated
// read, an order whose event reaches the worker, and the stats. It runs the script on
// its own ports, directories, Redis key prefix and RabbitMQ vhost, so it never touches
// what a developer's own `make run` or the shared servers hold.
package tourtest
