//! The consensus actor's message handlers: each feeds one event to the core (or answers
//! from it) and carries out the effects.

use super::*;

impl Actor for Consensus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(
            "[node {} term {}] starts as follower (log {}..={}, commit {}, vote {:?})",
            self.id(),
            self.core.current_term(),
            self.core.log().snapshot_index() + 1,
            self.core.log().last_index(),
            self.core.commit_index(),
            self.core.voted_for()
        );
        self.run(vec![Effect::ResetElectionTimer], ctx);
        ctx.run_interval(self.options.heartbeat_interval, |act, ctx| {
            act.answer_lost_forwards();
            let effects = act.core.on_tick();
            act.run(effects, ctx);
        });
        // Forwarded requests whose caller gave up are forgotten.
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            act.forwards.retain(|_, f| !f.tx.is_closed());
            let forwards = &act.forwards;
            act.forwarded_transfers
                .retain(|id, _| forwards.contains_key(id));
            act.waiters.retain(|_, w| !w.tx.is_closed());
            act.reads.retain(|_, (_, tx)| !tx.is_closed());
        });
    }
}

impl Handler<Inbound> for Consensus {
    type Result = ();

    fn handle(&mut self, Inbound { from, msg }: Inbound, ctx: &mut Context<Self>) {
        match msg {
            Message::Forward { req_id, request } => {
                let Ok(request) = codec::decode::<ClientRequest>(&request) else {
                    warn!(
                        "[node {} term {}] forwarded request {} from node {} does not decode: ignored",
                        self.id(),
                        self.core.current_term(),
                        req_id,
                        from
                    );
                    return;
                };
                if !self.seen_forwards.insert((from, req_id)) {
                    debug!(
                        "[node {} term {}] duplicate forwarded request {} from node {} ignored",
                        self.id(),
                        self.core.current_term(),
                        req_id,
                        from
                    );
                    return;
                }
                self.seen_order.push_back((from, req_id));
                if self.seen_order.len() > MAX_SEEN_FORWARDS {
                    if let Some(old) = self.seen_order.pop_front() {
                        self.seen_forwards.remove(&old);
                    }
                }
                let rx = self.start_request(request, true, ctx);
                let transport = self.transport.clone();
                actix::spawn(async move {
                    let response = rx.await.unwrap_or(ClientResponse::Unknown {
                        reason: "leader dropped the request".into(),
                        leader: None,
                    });
                    match codec::encode(&response) {
                        Ok(response) => {
                            transport.send(from, Message::ForwardReply { req_id, response })
                        }
                        Err(e) => log::error!("cannot encode a forwarded reply: {}", e),
                    }
                });
            }
            Message::ForwardReply { req_id, response } => {
                let response = codec::decode::<ClientResponse>(&response).unwrap_or_else(|e| {
                    ClientResponse::Unknown {
                        reason: format!("the leader's answer does not decode: {}", e),
                        leader: Some(from),
                    }
                });
                // Only the node the request went to may answer it.
                if self.forwards.get(&req_id).is_some_and(|f| f.to == from) {
                    self.forwarded_transfers.remove(&req_id);
                    if let Some(Forwarded { tx, .. }) = self.forwards.remove(&req_id) {
                        let _ = tx.send(response);
                    }
                }
            }
            msg => {
                let effects = self.core.on_message(from, msg);
                self.run(effects, ctx);
            }
        }
    }
}

impl Handler<ElectionTimeout> for Consensus {
    type Result = ();

    fn handle(&mut self, msg: ElectionTimeout, ctx: &mut Context<Self>) {
        if msg.generation != self.timer_generation {
            return; // raced with a newer reset
        }
        self.note_peers_heard();
        let effects = self.core.on_election_timeout();
        self.run(effects, ctx);
    }
}

impl Handler<ClientCall> for Consensus {
    type Result = MessageResult<ClientCall>;

    fn handle(&mut self, msg: ClientCall, ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.start_request(msg.request, msg.forwarded, ctx))
    }
}

impl Handler<ReadLog> for Consensus {
    type Result = MessageResult<ReadLog>;

    fn handle(&mut self, msg: ReadLog, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.core
                .log_slice(msg.term, msg.next_index, msg.max_entries, msg.max_bytes),
        )
    }
}

impl Handler<Replicated> for Consensus {
    type Result = ();

    fn handle(&mut self, msg: Replicated, ctx: &mut Context<Self>) {
        if self.core.role() == Role::Leader && msg.term == self.core.current_term() {
            self.heard.insert(msg.peer);
            self.metrics
                .peer_lag
                .with_label_values(&[&msg.peer.to_string()])
                .set(self.core.log().last_index().saturating_sub(msg.match_index) as i64);
            if msg.snapshot.is_some() && !self.transfers.contains_key(&msg.peer) {
                let index = msg.snapshot.map_or(0, |(i, _)| i);
                self.event(
                    "snapshot",
                    format!("sending index {} to node {}", index, msg.peer),
                );
            }
            match msg.snapshot {
                Some((index, bytes_stored)) => {
                    self.transfers.insert(
                        msg.peer,
                        SnapshotTransfer {
                            peer: msg.peer,
                            index,
                            bytes_stored,
                        },
                    );
                }
                None => {
                    self.transfers.remove(&msg.peer);
                }
            }
        }
        let effects = self.core.on_replicated(
            msg.term,
            msg.peer,
            msg.match_index,
            msg.read_seq,
            msg.snapshot.map(|s| s.0),
        );
        self.run(effects, ctx);
    }
}

impl Handler<StoreDurable> for Consensus {
    type Result = ();

    fn handle(&mut self, msg: StoreDurable, ctx: &mut Context<Self>) {
        self.store_durable = self.store_durable.max(msg.durable);
        let effects = self.core.on_store_durable(msg.durable);
        self.run(effects, ctx);
    }
}

impl Handler<ChunkStored> for Consensus {
    type Result = ();

    fn handle(&mut self, msg: ChunkStored, ctx: &mut Context<Self>) {
        if msg.installed {
            self.store_durable = self.store_durable.max(msg.snapshot.index);
            if msg.snapshot.index > self.core.commit_index() {
                self.event(
                    "snapshot",
                    format!(
                        "installed index {} from node {}",
                        msg.snapshot.index, msg.from
                    ),
                );
            }
        }
        let effects = self.core.on_snapshot_chunk(
            msg.from,
            msg.snapshot,
            (msg.next_offset, msg.installed),
            msg.membership,
            (msg.read_seq, msg.stream),
        );
        self.run(effects, ctx);
    }
}

impl Handler<GetStatus> for Consensus {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let s = self.core.status();
        MessageResult(NodeStatus {
            id: s.id,
            role: s.role.to_string(),
            term: s.term,
            leader: s.leader,
            commit_index: s.commit_index,
            last_applied: self.applied.get(),
            last_log_index: s.last_log_index,
            snapshot_index: s.snapshot_index,
            voted_for: self.core.voted_for(),
            store_durable_index: self.store_durable,
            snapshot_transfers: self.transfers.values().cloned().collect(),
        })
    }
}

impl Handler<GetEvents> for Consensus {
    type Result = MessageResult<GetEvents>;

    fn handle(&mut self, _: GetEvents, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.events.iter().cloned().collect())
    }
}

impl Handler<GetMemberAddrs> for Consensus {
    type Result = MessageResult<GetMemberAddrs>;

    fn handle(&mut self, _: GetMemberAddrs, _ctx: &mut Context<Self>) -> Self::Result {
        let m = self.core.membership();
        let mut out: Vec<(NodeId, String)> = m
            .voters
            .iter()
            .chain(m.learners.iter())
            .map(|(id, a)| (*id, a.http_addr.clone()))
            .collect();
        out.sort();
        MessageResult(out)
    }
}

impl Handler<Shutdown> for Consensus {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.shutdown(ctx);
    }
}
