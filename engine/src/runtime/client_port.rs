//! A node's client port, speaking the embedder's protocol.
//!
//! ```text
//!  clients ──► any core (a listener per core on one port, SO_REUSEPORT)
//!                │ ClientService::answer(kind, body)
//!                ├─► LocalGroup: a group of this core, called directly
//!                └─► ClientGroups::forward(group, owned request)
//!                      │ bounded channel, oneshot answer
//!                      └─► the group's core: ClientService::answer_forwarded
//! ```
//!
//! The engine owns the port's machinery: a listener on every core, the
//! bound on answers in progress, the way to the core of each group, and
//! closing it all when the core stops. What a frame means is the
//! embedder's [`ClientService`]: the engine never reads a body, so it knows
//! nothing of the embedder's commands, queries or replies.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_util::SinkExt;
use synod_net::{ClientListener, ClientListenerConfig};
use thiserror::Error;

use super::answering::answer_each;
use super::error::{ClientPortError, NodeError};
use super::group::{
    ChangeError, GroupHandle, GroupStatus, Groups, MemberChange, MembershipView, ProposeOutcome,
    ReadOutcome, StatusView, TransferError,
};
use super::options::core_of;
use crate::protocol::{ClientId, Command, NodeId};

/// What a node's client port does with each request: the embedder's
/// protocol, given to [`Node::start_with_client_port`](super::node::Node::start_with_client_port).
///
/// Its futures run on the core that took the request and need not be
/// `Send`; the service itself is shared by every core.
pub trait ClientService: Send + Sync + 'static {
    /// A request for a group on another core, owned so that it can cross
    /// there (see [`ClientGroups::forward`]).
    type Forwarded: Send + 'static;

    /// Answers one frame from a client: its `kind` and `body` as sent.
    /// They may be any bytes at all: what does not parse is refused with a
    /// reply, never a panic. `groups` reaches the groups of this core
    /// directly and forwards to the others.
    fn answer(
        &self,
        groups: &ClientGroups<'_, Self::Forwarded>,
        kind: u16,
        body: &[u8],
    ) -> impl Future<Output = ClientReply>;

    /// Answers a request another core's port forwarded to `group`, on the
    /// core of that group.
    fn answer_forwarded(
        &self,
        group: LocalGroup<'_>,
        request: Self::Forwarded,
    ) -> impl Future<Output = ClientReply>;
}

/// A reply frame to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientReply {
    /// Its frame kind (below the transport's reserved kinds).
    pub kind: u16,
    /// Its body.
    pub body: Vec<u8>,
}

/// Why a forwarded request got no answer from the group's core.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ForwardError {
    /// The node hosts no such group.
    #[error("no group {group} (this node hosts {groups})")]
    NoGroup {
        /// The group asked for.
        group: u32,
        /// The groups the node hosts (0 to this, exclusive).
        groups: u32,
    },
    /// The group's core no longer takes requests.
    #[error("core {core} stopped")]
    CoreStopped {
        /// The core.
        core: u32,
    },
    /// The group's core stopped with the request taken.
    #[error("core {core} dropped the request")]
    Dropped {
        /// The core.
        core: u32,
    },
    /// The group is not on the core it was routed to: it failed to start,
    /// or has stopped.
    #[error("group {group} is not on core {core}")]
    NotOnCore {
        /// The group.
        group: u32,
        /// The core.
        core: u32,
    },
}

/// The groups a [`ClientService`] reaches from the core that took a request.
pub struct ClientGroups<'a, F> {
    port: &'a PortCore<F>,
}

impl<F: Send + 'static> ClientGroups<'_, F> {
    /// The groups the node hosts: 0 to this, exclusive.
    pub fn groups(&self) -> u32 {
        self.port.groups_total
    }

    /// `group` if this core hosts it: its calls cost no hop between cores.
    pub fn local(&self, group: u32) -> Option<LocalGroup<'_>> {
        let (handle, status) = self.port.local.get(&group)?;
        Some(LocalGroup { handle, status })
    }

    /// Sends `request` to the core of `group` and waits for the reply that
    /// [`ClientService::answer_forwarded`] gives there. The core's queue
    /// is bounded: beyond it, this waits.
    pub async fn forward(&self, group: u32, request: F) -> Result<ClientReply, ForwardError> {
        let port = self.port;
        if group >= port.groups_total {
            return Err(ForwardError::NoGroup {
                group,
                groups: port.groups_total,
            });
        }
        let core = core_of(group, port.cores);
        let (reply, answer) = oneshot::channel();
        let mut route = port.routes[core as usize].clone();
        let forward = Forward {
            group,
            request,
            reply,
        };
        if route.send(forward).await.is_err() {
            return Err(ForwardError::CoreStopped { core });
        }
        answer.await.unwrap_or(Err(ForwardError::Dropped { core }))
    }
}

/// A group on the core running the caller: the engine calls a client's
/// request turns into.
#[derive(Clone, Copy)]
pub struct LocalGroup<'a> {
    handle: &'a GroupHandle,
    status: &'a GroupStatus,
}

impl LocalGroup<'_> {
    /// Proposes `data` as `(client, seq)` (see
    /// [`NodeHandle::propose_session`](super::node::NodeHandle::propose_session))
    /// and waits until it is applied or refused.
    pub async fn propose(&self, client: ClientId, seq: u64, data: Bytes) -> ProposeOutcome {
        self.handle.propose(client, seq, data).await
    }

    /// Proposes `commands` as one request: they enter the leader's queue
    /// together and in order, and one slot or none. One outcome each.
    pub async fn propose_many(&self, commands: Vec<Command>) -> Vec<ProposeOutcome> {
        self.handle.propose_many(commands).await
    }

    /// A linearizable read of `query` (read-index at the leader).
    pub async fn read(&self, query: Bytes) -> ReadOutcome {
        self.handle.read(query).await
    }

    /// Answers `query` from this node's state as it stands: a stale read.
    pub async fn read_local(&self, query: Bytes) -> ReadOutcome {
        self.handle.read_local(query).await
    }

    /// The group's status on this node as it stands.
    pub fn status(&self) -> StatusView {
        self.status.view()
    }

    /// The group's configuration as this node sees it (`None` before its
    /// first step).
    pub fn membership(&self) -> Option<MembershipView> {
        self.status.membership()
    }

    /// Hands leadership to member `to` (this node must lead) and waits
    /// until this node sees it lead.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), TransferError> {
        self.handle.transfer_leadership(self.status, to).await
    }

    /// Changes the group's members (this node must lead); see
    /// [`Node::change_members`](super::Node::change_members).
    pub async fn change_members(
        &self,
        change: MemberChange,
        within: Duration,
    ) -> Result<MembershipView, ChangeError> {
        self.handle
            .change_members(self.status, change, within)
            .await
    }
}

/// A request forwarded to the core of its group.
pub(super) struct Forward<F> {
    group: u32,
    request: F,
    reply: oneshot::Sender<Result<ClientReply, ForwardError>>,
}

/// Everything one core needs to open its share of the client port.
pub(super) struct PortSetup<C: ClientService> {
    /// Where clients connect (the same on every core).
    pub(super) listen: SocketAddr,
    /// The secret clients must prove they know, if any.
    pub(super) secret: Option<Vec<u8>>,
    /// The embedder's protocol.
    pub(super) service: Arc<C>,
    /// Requests other cores forward to this core's groups.
    pub(super) forwarded: mpsc::Receiver<Forward<C::Forwarded>>,
    /// Every core's queue of forwarded requests, by core.
    pub(super) routes: Vec<mpsc::Sender<Forward<C::Forwarded>>>,
}

/// A new channel of forwarded requests for one core.
pub(super) fn forward_channel<F>() -> (mpsc::Sender<Forward<F>>, mpsc::Receiver<Forward<F>>) {
    mpsc::channel(super::requests::CORE_REQUESTS_MAX)
}

/// One core's view of the node's groups, for its client port.
struct PortCore<F> {
    cores: u32,
    groups_total: u32,
    local: Groups,
    routes: Vec<mpsc::Sender<Forward<F>>>,
}

/// The client port of one core, open, and the tasks answering it.
pub(super) struct OpenPort {
    listener: Rc<ClientListener>,
    serving: glommio::Task<()>,
    forwarded: glommio::Task<()>,
}

/// The core opening its share of the port, and the node's cores and groups.
pub(super) struct Layout {
    pub(super) core: u32,
    pub(super) cores: u32,
    pub(super) groups: u32,
}

/// Opens this core's share of the client port: answers its clients, and
/// the requests other cores forward to its groups.
pub(super) fn open<C: ClientService>(
    setup: PortSetup<C>,
    layout: Layout,
    local: Groups,
) -> Result<OpenPort, NodeError> {
    let PortSetup {
        listen,
        secret,
        service,
        forwarded,
        routes,
    } = setup;
    let config = ClientListenerConfig {
        secret: secret.map(synod_net::Secret::new),
        ..ClientListenerConfig::new(listen)
    };
    let listener = ClientListener::bind(config).map_err(|source| NodeError::ClientPort {
        addr: listen,
        source: ClientPortError::Bind {
            core: layout.core,
            source,
        },
    })?;
    let listener = Rc::new(listener);
    let forwarded = serve_forwarded(service.clone(), layout.core, local.clone(), forwarded);
    // One reference count per request, not one for each part.
    let port = Rc::new((
        PortCore {
            cores: layout.cores,
            groups_total: layout.groups,
            local,
            routes,
        },
        service,
    ));
    let incoming = Box::pin(futures_util::stream::unfold(
        listener.clone(),
        |listener| async move { listener.next().await.map(|request| (request, listener)) },
    ));
    let serving = answer_each(incoming, move |request| {
        let port = port.clone();
        async move {
            let (core, service) = &*port;
            let groups = ClientGroups { port: core };
            let reply = service.answer(&groups, request.kind, &request.body).await;
            // Waits while the client's queue is full: a client that does
            // not read holds its own answers in progress, not the node's
            // memory (the port stops reading its requests).
            if let Err(error) = request.reply(reply.kind, &reply.body).await {
                tracing::debug!(%error, "client gone before its reply");
            }
        }
    });
    Ok(OpenPort {
        listener,
        serving,
        forwarded,
    })
}

/// Answers the requests other cores forward to this core's groups.
fn serve_forwarded<C: ClientService>(
    service: Arc<C>,
    core: u32,
    groups: Groups,
    forwarded: mpsc::Receiver<Forward<C::Forwarded>>,
) -> glommio::Task<()> {
    let serving = Rc::new((service, groups));
    answer_each(forwarded, move |forward: Forward<C::Forwarded>| {
        let serving = serving.clone();
        async move {
            let (service, groups) = &*serving;
            let Forward {
                group,
                request,
                reply,
            } = forward;
            let answer = match groups.get(&group) {
                Some((handle, status)) => {
                    let local = LocalGroup { handle, status };
                    Ok(service.answer_forwarded(local, request).await)
                }
                None => Err(ForwardError::NotOnCore { group, core }),
            };
            let _ = reply.send(answer);
        }
    })
}

impl OpenPort {
    /// Drops every request in progress (each caller's reply channel with
    /// it) and closes the port.
    pub(super) async fn close(self) {
        self.serving.cancel().await;
        self.forwarded.cancel().await;
        match Rc::try_unwrap(self.listener) {
            Ok(listener) => listener.shutdown().await,
            Err(_) => tracing::warn!("the client port is still in use; it closes when dropped"),
        }
    }
}

/// The service of a node started without a client port: never called.
pub(super) enum NoClientPort {}

impl ClientService for NoClientPort {
    type Forwarded = NoClientPort;

    async fn answer(
        &self,
        _groups: &ClientGroups<'_, NoClientPort>,
        _kind: u16,
        _body: &[u8],
    ) -> ClientReply {
        match *self {}
    }

    async fn answer_forwarded(&self, _group: LocalGroup<'_>, request: NoClientPort) -> ClientReply {
        match request {}
    }
}
