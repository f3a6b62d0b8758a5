//! Every service of the corpus served on port 0 and every method called through its
//! generated client: messages of every kind survive the round trip, and each RPC reaches
//! its own handler even when its name collided with a keyword, a helper or another RPC.

use std::collections::HashMap;

use svrkit::codegen::prost_types;
use svrkit::{Channel, Status};
use svrkit_codegen_corpus::corpus::{docs, r#match::r#type as kw, multi, types, wkt};
use svrkit_codegen_corpus::serve::serve;

fn scalars() -> types::Scalars {
    types::Scalars {
        f_double: -1.5,
        f_float: 2.25,
        f_int32: -7,
        f_int64: i64::MIN,
        f_uint32: u32::MAX,
        f_uint64: u64::MAX,
        f_sint32: -3,
        f_sint64: -(1 << 40),
        f_fixed32: 9,
        f_fixed64: 1 << 50,
        f_sfixed32: -11,
        f_sfixed64: -(1 << 60),
        f_bool: true,
        f_string: "héllo ✓".into(),
        f_bytes: vec![0, 255, 7].into(),
        f_enum: types::Color::Green as i32,
    }
}

fn tree() -> types::Tree {
    let leaf = |name: &str| types::Tree {
        name: name.into(),
        ..Default::default()
    };
    types::Tree {
        name: "root".into(),
        children: vec![leaf("a"), leaf("b")],
        first: Some(Box::new(leaf("first"))),
        named: HashMap::from([("n".to_string(), leaf("named"))]),
        link: Some(types::tree::Link::Forest(Box::new(types::Forest {
            trees: vec![leaf("f")],
            biggest: Some(Box::new(leaf("big"))),
        }))),
    }
}

fn everything() -> types::Everything {
    let inner = types::nested::Inner {
        deeper: Some(types::nested::inner::Deeper {
            leaf: "deep".into(),
        }),
        kind: types::nested::inner::Kind::Deep as i32,
    };
    types::Everything {
        scalars: Some(scalars()),
        repeated: Some(types::Repeated {
            doubles: vec![1.0, -2.0],
            int64s: vec![i64::MAX, 0],
            sint32s: vec![-1, 1],
            fixed64s: vec![3],
            bools: vec![true, false],
            strings: vec!["x".into(), String::new()],
            blobs: vec![vec![1u8].into()],
            colors: vec![types::Color::Red as i32],
            messages: vec![scalars(), types::Scalars::default()],
            unpacked: vec![4, 5, 6],
        }),
        maps: Some(types::Maps {
            by_name: HashMap::from([("one".into(), 1)]),
            by_id: HashMap::from([(-5, "minus five".into())]),
            colors: HashMap::from([(1, types::Color::Green as i32)]),
            flags: HashMap::from([(true, vec![1u8, 2].into())]),
            messages: HashMap::from([(-9, scalars())]),
            nested: HashMap::from([(3, inner.clone())]),
            times: HashMap::from([(
                "epoch".into(),
                prost_types::Timestamp {
                    seconds: 1,
                    nanos: 2,
                },
            )]),
        }),
        nested: Some(types::Nested {
            inner: Some(inner.clone()),
            inners: vec![inner.clone(), types::nested::Inner::default()],
            shortcut: inner.deeper.clone(),
        }),
        oneofs: Some(types::Oneofs {
            choice: Some(types::oneofs::Choice::At(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            })),
            other: Some(types::oneofs::Other::Flag(true)),
        }),
        tree: Some(tree()),
        optionals: Some(types::Optionals {
            count: Some(0),
            label: Some(String::new()),
            color: None,
            blob: Some(vec![].into()),
            flag: Some(false),
            scalars: Some(scalars()),
        }),
    }
}

fn all_known() -> wkt::AllKnown {
    let value = prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue("v".into())),
    };
    let structure = prost_types::Struct {
        fields: [("k".to_string(), value.clone())].into(),
    };
    wkt::AllKnown {
        timestamp: Some(prost_types::Timestamp {
            seconds: 10,
            nanos: 1,
        }),
        timestamp_list: vec![prost_types::Timestamp::default()],
        duration_map: HashMap::from([(
            "d".into(),
            prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000,
            },
        )]),
        empty: Some(()),
        empty_list: vec![(), ()],
        empty_map: HashMap::from([("e".into(), ())]),
        any: Some(prost_types::Any {
            type_url: "type.googleapis.com/corpus.types.Scalars".into(),
            value: vec![8, 1],
        }),
        r#struct: Some(structure.clone()),
        value_list: vec![value.clone()],
        value_map: HashMap::from([("v".into(), value.clone())]),
        list_value: Some(prost_types::ListValue {
            values: vec![value],
        }),
        field_mask: Some(prost_types::FieldMask {
            paths: vec!["a.b".into()],
        }),
        bool_value: Some(false),
        bool_value_list: vec![true],
        bytes_value_map: HashMap::from([("b".into(), vec![1, 2])]),
        double_value: Some(0.5),
        float_value_list: vec![1.5],
        int32_value: Some(-1),
        int64_value_map: HashMap::from([("i".into(), i64::MIN)]),
        string_value: Some("s".into()),
        u_int32_value_list: vec![u32::MAX],
        u_int64_value: Some(u64::MAX),
        api: Some(prost_types::Api {
            name: "api".into(),
            ..Default::default()
        }),
        r#type: Some(prost_types::Type {
            name: "type".into(),
            ..Default::default()
        }),
        source_context_list: vec![prost_types::SourceContext {
            file_name: "f.proto".into(),
        }],
        null: prost_types::NullValue::NullValue as i32,
        nulls: vec![0, 0],
        null_map: HashMap::from([("n".into(), 0)]),
        ..Default::default()
    }
}

#[tokio::test]
async fn messages_of_every_kind_round_trip() {
    let (addr, _stop) = serve().await;
    let client = types::types_client::TypesClient::new(Channel::lazy([addr]));
    let sent = everything();
    assert_eq!(
        client.everything(sent.clone()).await.expect("everything"),
        sent
    );
    assert_eq!(client.scalars(scalars()).await.expect("scalars"), scalars());
    assert_eq!(client.tree(tree()).await.expect("tree"), tree());
    let deeper = types::nested::inner::Deeper { leaf: "x".into() };
    assert_eq!(client.deeper(deeper.clone()).await.expect("deeper"), deeper);
}

#[tokio::test]
async fn well_known_types_as_fields_arguments_and_results() {
    let (addr, _stop) = serve().await;
    let c = wkt::known_client::KnownClient::new(Channel::lazy([addr]));
    let all = all_known();
    assert_eq!(c.echo_all(all.clone()).await.expect("all"), all);
    let ts = prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 9,
    };
    assert_eq!(c.echo_timestamp(ts).await.expect("ts"), ts);
    let d = prost_types::Duration {
        seconds: -3,
        nanos: -5,
    };
    assert_eq!(c.echo_duration(d).await.expect("duration"), d);
    c.echo_empty(()).await.expect("empty");
    let any = all.any.clone().expect("any");
    assert_eq!(c.echo_any(any.clone()).await.expect("any"), any);
    let s = all.r#struct.clone().expect("struct");
    assert_eq!(c.echo_struct(s.clone()).await.expect("struct"), s);
    let v = prost_types::Value {
        kind: Some(prost_types::value::Kind::NumberValue(2.5)),
    };
    assert_eq!(c.echo_value(v.clone()).await.expect("value"), v);
    let l = all.list_value.clone().expect("list");
    assert_eq!(c.echo_list_value(l.clone()).await.expect("list"), l);
    let m = all.field_mask.clone().expect("mask");
    assert_eq!(c.echo_field_mask(m.clone()).await.expect("mask"), m);
    assert!(c.echo_bool_value(true).await.expect("bool"));
    assert_eq!(c.echo_bytes_value(vec![9, 8]).await.expect("bytes"), [9, 8]);
    assert_eq!(c.echo_double_value(-0.25).await.expect("f64"), -0.25);
    assert_eq!(c.echo_float_value(4.5).await.expect("f32"), 4.5);
    assert_eq!(c.echo_int32_value(i32::MIN).await.expect("i32"), i32::MIN);
    assert_eq!(c.echo_int64_value(i64::MAX).await.expect("i64"), i64::MAX);
    assert_eq!(c.echo_string_value("✓".into()).await.expect("str"), "✓");
    assert_eq!(c.echo_u_int32_value(7).await.expect("u32"), 7);
    assert_eq!(c.echo_u_int64_value(u64::MAX).await.expect("u64"), u64::MAX);
    let api = all.api.clone().expect("api");
    assert_eq!(c.echo_api(api.clone()).await.expect("api"), api);
    let t = all.r#type.clone().expect("type");
    assert_eq!(c.echo_type(t.clone()).await.expect("type"), t);
    let sc = prost_types::SourceContext {
        file_name: "x".into(),
    };
    assert_eq!(c.echo_source_context(sc.clone()).await.expect("sc"), sc);
}

#[tokio::test]
async fn colliding_rpc_names_each_reach_their_own_handler() {
    let (addr, _stop) = serve().await;
    let c = kw::match_client::MatchClient::new(Channel::lazy([addr]));
    let req = || kw::Self_ {
        r#type: "t".into(),
        self_: "s".into(),
        r#enum: kw::Enum::Self_ as i32,
        nested: Some(kw::Type {
            r#await: "a".into(),
            r#dyn: "d".into(),
        }),
        ..Default::default()
    };
    let calls: Vec<(&str, Result<kw::Self_, Status>)> = vec![
        ("Type", c.type_(req()).await),
        ("Self", c.self_(req()).await),
        ("New", c.new_(req()).await),
        ("WithService", c.with_service_(req()).await),
        ("NewWith", c.new_with(req()).await),
        ("Service", c.service_(req()).await),
        ("ServiceName", c.service_name_(req()).await),
        ("GetUser", c.get_user(req()).await),
        ("get_user", c.get_user_(req()).await),
        ("GETUser", c.get_user__(req()).await),
        ("Foo", c.foo(req()).await),
        ("FooWith", c.foo_with_(req()).await),
        ("Into", c.into_(req()).await),
        ("TryInto", c.try_into_(req()).await),
        ("TypeWith", c.type_with(req()).await),
        ("Clone", c.clone(req()).await),
        ("Fmt", c.fmt(req()).await),
        ("Call", c.call(req()).await),
        ("Descriptor", c.descriptor(req()).await),
        ("Unary", c.unary(req()).await),
        ("Inner", c.inner(req()).await),
        // The `_with` variants reach the same handlers.
        ("Foo", c.foo_with(req(), Default::default()).await),
        ("NewWith", c.new_with_with(req(), Default::default()).await),
        ("Type", c.type__with(req(), Default::default()).await),
        ("Into", c.into__with(req(), Default::default()).await),
    ];
    for (proto, reply) in calls {
        let reply = reply.unwrap_or_else(|e| panic!("{proto}: {e}"));
        assert_eq!(reply.r#match, proto, "routed to the handler of {proto}");
        assert_eq!((reply.r#type.as_str(), reply.self_.as_str()), ("t", "s"));
    }
    let krate = kw::Crate { r#mod: "m".into() };
    assert_eq!(c.crate_(krate.clone()).await.expect("crate").r#mod, "m!");
    assert_eq!(c.match_(krate.clone()).await.expect("match"), krate);
    let t = kw::Type {
        r#await: "x".into(),
        r#dyn: String::new(),
    };
    assert_eq!(c.async_(t.clone()).await.expect("async"), t);
    // The constants follow the same rule, in upper case.
    assert_eq!(kw::match_methods::GET_USER__.method, "GETUser");
    assert_eq!(kw::match_methods::NEW_.method, "New");
    assert_eq!(kw::match_methods::SERVICE.methods.len(), 24);

    let selfish = kw::self_client::SelfClient::new(Channel::lazy([addr]));
    let reply = selfish.self_(req()).await.expect("self");
    assert_eq!(reply.r#match, "self.Self");
    assert_eq!(kw::self_methods::SERVICE_NAME, "corpus.match.type.self");
}

#[tokio::test]
async fn one_package_over_two_files_with_three_services_and_imports() {
    let (addr, _stop) = serve().await;
    let channel = Channel::lazy([addr]);
    let writer = multi::writer_client::WriterClient::new(channel.clone());
    let reader = multi::reader_client::ReaderClient::new(channel.clone());
    let batcher = multi::batcher_client::BatcherClient::new(channel);
    let put = multi::Put {
        key: "abc".into(),
        value: Some(everything()),
    };
    assert_eq!(writer.put(put.clone()).await.expect("put").version, 3);
    assert_eq!(reader.get(put.clone()).await.expect("get"), everything());
    let missing = reader
        .get(multi::Put::default())
        .await
        .expect_err("no value");
    assert_eq!(missing.code(), svrkit::Code::NotFound);
    let batch = multi::Batch {
        puts: vec![put.clone(), put],
        tree: Some(tree()),
        self_: Some(kw::Self_::default()),
    };
    assert_eq!(batcher.apply(batch).await.expect("apply").version, 2);
    assert_eq!(
        batcher.last(()).await.expect("last"),
        multi::Batch::default()
    );
    let leaf = batcher
        .keyword(kw::Crate { r#mod: "k".into() })
        .await
        .expect("keyword");
    assert_eq!(leaf.leaf, "k");
}

#[tokio::test]
async fn documented_items_keep_their_comments_as_safe_rustdoc() {
    let (addr, _stop) = serve().await;
    let doc = docs::doc_client::DocClient::new(Channel::lazy([addr]));
    let d = docs::Documented {
        field: "<b>".into(),
        other: "`".into(),
    };
    assert_eq!(doc.get(d.clone()).await.expect("get"), d);

    let code = svrkit_codegen_corpus::generated::DOCS;
    // No code block is left to be compiled as a doctest (`cargo test --doc` on this crate
    // would fail), and the text is still there.
    let mut fences = 0;
    for line in code.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("/// ```") {
            fences += 1;
            if fences % 2 == 1 {
                assert!(
                    rest.starts_with("text"),
                    "an opening fence not marked text: {line}"
                );
            }
        }
    }
    assert!(fences >= 8, "{fences} fences in:\n{code}");
    assert!(code.contains("Option\\<T\\>"), "{code}");
    assert!(code.contains("this is not Rust at all {"), "{code}");
    assert!(code.contains("<https://example.invalid/doc>"), "{code}");
    assert!(!code.contains("<<"), "{code}");
}
