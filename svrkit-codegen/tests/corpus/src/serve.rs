//! One implementation of every corpus service, for the tests here and `svrkit call`'s:
//! each method answers with its request (or a reply built from it), and the RPCs of
//! `corpus.match.type.Match` stamp their IDL name into the reply, so a test can see which
//! handler a call reached.

use std::net::SocketAddr;

use svrkit::codegen::prost_types;
use svrkit::{Server, Status};
use tokio::net::TcpListener;

use crate::corpus::{docs, r#match::r#type as kw, multi, types, wkt};

/// Defines handlers that answer with their request.
macro_rules! echo {
    ($( $name:ident : $ty:ty ),* $(,)?) => {
        $(
            async fn $name(&self, request: $ty) -> Result<$ty, Status> {
                Ok(request)
            }
        )*
    };
}

/// Implements every service of the corpus.
#[derive(Debug, Clone, Copy)]
pub struct Corpus;

impl wkt::known_server::Known for Corpus {
    echo!(
        echo_all: wkt::AllKnown,
        echo_timestamp: prost_types::Timestamp,
        echo_duration: prost_types::Duration,
        echo_empty: (),
        echo_any: prost_types::Any,
        echo_struct: prost_types::Struct,
        echo_value: prost_types::Value,
        echo_list_value: prost_types::ListValue,
        echo_field_mask: prost_types::FieldMask,
        echo_bool_value: bool,
        echo_bytes_value: Vec<u8>,
        echo_double_value: f64,
        echo_float_value: f32,
        echo_int32_value: i32,
        echo_int64_value: i64,
        echo_string_value: String,
        echo_u_int32_value: u32,
        echo_u_int64_value: u64,
        echo_api: prost_types::Api,
        echo_type: prost_types::Type,
        echo_source_context: prost_types::SourceContext,
    );
}

impl types::types_server::Types for Corpus {
    echo!(
        everything: types::Everything,
        scalars: types::Scalars,
        tree: types::Tree,
        deeper: types::nested::inner::Deeper,
    );
}

/// Handlers that stamp the RPC's IDL name into the reply, to prove the routing.
macro_rules! stamp {
    ($( $name:ident : $proto:literal ),* $(,)?) => {
        $(
            async fn $name(&self, mut request: kw::Self_) -> Result<kw::Self_, Status> {
                request.r#match = $proto.to_string();
                Ok(request)
            }
        )*
    };
}

impl kw::match_server::Match for Corpus {
    stamp!(
        type_: "Type",
        self_: "Self",
        new_: "New",
        with_service_: "WithService",
        new_with: "NewWith",
        service_: "Service",
        service_name_: "ServiceName",
        get_user: "GetUser",
        get_user_: "get_user",
        get_user__: "GETUser",
        foo: "Foo",
        foo_with_: "FooWith",
        into_: "Into",
        try_into_: "TryInto",
        type_with: "TypeWith",
        clone: "Clone",
        fmt: "Fmt",
        call: "Call",
        descriptor: "Descriptor",
        unary: "Unary",
        inner: "Inner",
    );
    async fn match_(&self, request: kw::Crate) -> Result<kw::Crate, Status> {
        Ok(request)
    }
    async fn crate_(&self, request: kw::Crate) -> Result<kw::Crate, Status> {
        Ok(kw::Crate {
            r#mod: format!("{}!", request.r#mod),
        })
    }
    async fn async_(&self, request: kw::Type) -> Result<kw::Type, Status> {
        Ok(request)
    }
}

impl kw::self_server::Self_ for Corpus {
    stamp!(self_: "self.Self");
}

impl multi::writer_server::Writer for Corpus {
    async fn put(&self, request: multi::Put) -> Result<multi::Ack, Status> {
        Ok(multi::Ack {
            version: request.key.len() as u64,
        })
    }
}

impl multi::reader_server::Reader for Corpus {
    async fn get(&self, request: multi::Put) -> Result<types::Everything, Status> {
        request.value.ok_or_else(|| Status::not_found("no value"))
    }
}

impl multi::batcher_server::Batcher for Corpus {
    async fn apply(&self, request: multi::Batch) -> Result<multi::Ack, Status> {
        Ok(multi::Ack {
            version: request.puts.len() as u64,
        })
    }
    async fn last(&self, (): ()) -> Result<multi::Batch, Status> {
        Ok(multi::Batch::default())
    }
    async fn keyword(&self, request: kw::Crate) -> Result<types::nested::inner::Deeper, Status> {
        Ok(types::nested::inner::Deeper {
            leaf: request.r#mod,
        })
    }
}

impl docs::doc_server::Doc for Corpus {
    async fn get(&self, request: docs::Documented) -> Result<docs::Documented, Status> {
        Ok(request)
    }
}

/// Serves every corpus service on a fresh loopback port until the returned sender is
/// dropped or fired.
pub async fn serve() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(wkt::known_server::KnownServer::new(Corpus))
        .add_service(types::types_server::TypesServer::new(Corpus))
        .add_service(kw::match_server::MatchServer::new(Corpus))
        .add_service(kw::self_server::SelfServer::new(Corpus))
        .add_service(multi::writer_server::WriterServer::new(Corpus))
        .add_service(multi::reader_server::ReaderServer::new(Corpus))
        .add_service(multi::batcher_server::BatcherServer::new(Corpus))
        .add_service(docs::doc_server::DocServer::new(Corpus));
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}
