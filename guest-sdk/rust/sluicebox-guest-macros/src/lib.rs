//! The attribute macros of `sluicebox-guest`: `#[filter]`, `#[map]`, `#[flat_map]` and
//! `#[init]`. Use them through `sluicebox_guest`, which re-exports them and documents them.
//!
//! Each keeps the function as it is (so tests can call it) and adds, behind
//! `cfg(target_arch = "wasm32")`, the module's `#[unsafe(no_mangle)]` exports, which call into
//! `sluicebox_guest::__rt`. The function's signature is checked here where a message can help,
//! and by the compiler (through `__rt::check_*`) on every target.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, FnArg, GenericParam, ItemFn, Lit, LitBool, LitStr, ReturnType, Type};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Filter,
    Map,
    FlatMap,
    Init,
}

impl Kind {
    fn attr(self) -> &'static str {
        match self {
            Kind::Filter => "#[filter]",
            Kind::Map => "#[map]",
            Kind::FlatMap => "#[flat_map]",
            Kind::Init => "#[init]",
        }
    }

    fn signature(self) -> &'static str {
        match self {
            Kind::Filter => "fn name(event: &Event) -> bool",
            Kind::Map => "fn name(event: &Event, edits: &mut Edits) -> Result<(), String>",
            Kind::FlatMap => "fn name(event: &Event, out: &mut Emitter) -> Result<(), String>",
            Kind::Init => "fn name(params: &Params) -> Result<(), String>",
        }
    }

    /// The parameters: whether each is `&mut`, and its type for messages.
    fn params(self) -> &'static [(bool, &'static str)] {
        match self {
            Kind::Filter => &[(false, "&Event")],
            Kind::Map => &[(false, "&Event"), (true, "&mut Edits")],
            Kind::FlatMap => &[(false, "&Event"), (true, "&mut Emitter")],
            Kind::Init => &[(false, "&Params")],
        }
    }
}

/// See `sluicebox_guest::filter`.
#[proc_macro_attribute]
pub fn filter(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Filter, args, item)
}

/// See `sluicebox_guest::map`.
#[proc_macro_attribute]
pub fn map(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Map, args, item)
}

/// See `sluicebox_guest::flat_map`.
#[proc_macro_attribute]
pub fn flat_map(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::FlatMap, args, item)
}

/// See `sluicebox_guest::init`.
#[proc_macro_attribute]
pub fn init(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Init, args, item)
}

fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let item = TokenStream2::from(item);
    match expand_inner(kind, args.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            // Keep the function, so the error is the only one (without `async`, whose own
            // rules would add errors of their own).
            let mut tokens = e.into_compile_error();
            match syn::parse2::<ItemFn>(item.clone()) {
                Ok(mut func) => {
                    func.sig.asyncness = None;
                    tokens.extend(quote!(#func));
                }
                Err(_) => tokens.extend(item),
            }
            tokens.into()
        }
    }
}

/// The parsed arguments of `#[filter]`, `#[map]` and `#[flat_map]`.
#[derive(Default)]
struct Args {
    fields: Option<Vec<LitStr>>,
    raw: Option<LitBool>,
}

fn parse_args(kind: Kind, args: TokenStream2) -> syn::Result<Args> {
    let mut out = Args::default();
    if kind == Kind::Init {
        if !args.is_empty() {
            return Err(syn::Error::new_spanned(
                args,
                "`#[init]` takes no arguments",
            ));
        }
        return Ok(out);
    }
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("fields") {
            if out.fields.is_some() {
                return Err(meta.error("duplicate argument `fields`"));
            }
            let expr: Expr = meta.value()?.parse()?;
            let Expr::Array(array) = expr else {
                return Err(syn::Error::new_spanned(
                    expr,
                    "`fields` takes an array of string literals, like `fields = [\"level\", \"http.method\"]`",
                ));
            };
            let mut fields: Vec<LitStr> = Vec::new();
            for elem in array.elems {
                let Expr::Lit(ExprLit {
                    lit: Lit::Str(path),
                    ..
                }) = elem
                else {
                    return Err(syn::Error::new_spanned(
                        elem,
                        "each field must be a string literal path, like \"level\" or \"http.method\"",
                    ));
                };
                check_path(&path)?;
                if fields.iter().any(|f| f.value() == path.value()) {
                    return Err(syn::Error::new(path.span(), "duplicate field path"));
                }
                fields.push(path);
            }
            if fields.len() > sluicebox_abi::MAX_FIELDS {
                return Err(meta.error(format!(
                    "too many fields: a module may declare at most {}",
                    sluicebox_abi::MAX_FIELDS
                )));
            }
            out.fields = Some(fields);
            Ok(())
        } else if meta.path.is_ident("raw") {
            if out.raw.is_some() {
                return Err(meta.error("duplicate argument `raw`"));
            }
            let value = meta.value()?;
            let lit: LitBool = value
                .parse()
                .map_err(|e| syn::Error::new(e.span(), "`raw` takes `true` or `false`"))?;
            out.raw = Some(lit);
            Ok(())
        } else {
            let name = meta
                .path
                .get_ident()
                .map_or_else(|| "?".to_owned(), ToString::to_string);
            Err(meta.error(format!(
                "unknown argument `{name}` of `{}`: expected `fields = [\"path\", ...]` or `raw = true`",
                kind.attr()
            )))
        }
    });
    syn::parse::Parser::parse2(parser, args)?;
    if let Some(raw) = out.raw.as_ref().filter(|r| r.value && out.fields.is_none()) {
        return Err(syn::Error::new(
            raw.span(),
            "`raw = true` only goes with `fields`: without `fields` the host indexes every field and always passes raw bytes",
        ));
    }
    Ok(out)
}

/// Checks a declared path as the host will (docs/abi.md sections 7 and 10): not empty, no
/// newline (the separator of declarations). Any other text is a valid path: `\x` stands
/// for `x`, and components may be empty.
fn check_path(lit: &LitStr) -> syn::Result<()> {
    let path = lit.value();
    let err = |msg: &str| Err(syn::Error::new(lit.span(), msg));
    if path.is_empty() {
        return err("a field path cannot be empty (paths look like \"http.method\")");
    }
    if path.contains('\n') {
        return err("a field path cannot contain a newline");
    }
    Ok(())
}

/// Checks what the compiler's own errors would explain badly.
fn check_signature(kind: Kind, func: &ItemFn) -> syn::Result<()> {
    let sig = &func.sig;
    let attr = kind.attr();
    let expected = || format!("expected `{}`", kind.signature());
    if let Some(token) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            token,
            format!("a `{attr}` function cannot be `async`: the host calls it synchronously"),
        ));
    }
    if let Some(token) = &sig.unsafety {
        return Err(syn::Error::new_spanned(
            token,
            format!("a `{attr}` function cannot be `unsafe`"),
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(syn::Error::new_spanned(
            abi,
            format!("a `{attr}` function is a plain Rust function; the attribute adds the export"),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new_spanned(variadic, expected()));
    }
    for param in &sig.generics.params {
        if !matches!(param, GenericParam::Lifetime(_)) {
            return Err(syn::Error::new_spanned(
                param,
                format!("a `{attr}` function cannot be generic"),
            ));
        }
    }
    let params = kind.params();
    if sig.inputs.len() != params.len() {
        let span = if sig.inputs.is_empty() {
            sig.paren_token.span.join()
        } else {
            sig.inputs.span()
        };
        let n = params.len();
        let s = if n == 1 { "" } else { "s" };
        return Err(syn::Error::new(
            span,
            format!("a `{attr}` function takes {n} argument{s}: {}", expected()),
        ));
    }
    for (arg, (mutable, ty)) in sig.inputs.iter().zip(params) {
        let arg_ty = match arg {
            FnArg::Receiver(receiver) => {
                return Err(syn::Error::new_spanned(
                    receiver,
                    format!("a `{attr}` function cannot take `self`: {}", expected()),
                ));
            }
            FnArg::Typed(typed) => &typed.ty,
        };
        let ok = matches!(&**arg_ty, Type::Reference(r) if r.mutability.is_some() == *mutable);
        if !ok {
            return Err(syn::Error::new_spanned(
                arg_ty,
                format!("expected `{ty}` here: {}", expected()),
            ));
        }
    }
    if kind == Kind::Filter && matches!(sig.output, ReturnType::Default) {
        return Err(syn::Error::new(
            sig.paren_token.span.close(),
            "a `#[filter]` function returns `bool`: true keeps the event",
        ));
    }
    Ok(())
}

fn expand_inner(kind: Kind, args: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let args = parse_args(kind, args)?;
    let func: ItemFn = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!(
                "`{}` goes on a function: `{}`",
                kind.attr(),
                kind.signature()
            ),
        )
    })?;
    check_signature(kind, &func)?;
    let ident = &func.sig.ident;
    // Errors of the compiler's signature check point at the return type (or the name).
    let sig_span = match &func.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => ident.span(),
    };

    if kind == Kind::Init {
        let check = quote_spanned! {sig_span=> ::sluicebox_guest::__rt::check_init(#ident); };
        return Ok(quote! {
            #func

            // A second `#[init]` in the crate redefines this name: one init per module.
            #[doc(hidden)]
            #[macro_export]
            macro_rules! __sluicebox_only_one_init_per_crate {
                () => {};
            }

            const _: () = {
                #[allow(dead_code)]
                fn __sluicebox_check_signature() {
                    #check
                }
            };

            #[cfg(target_arch = "wasm32")]
            const _: () = {
                #[unsafe(no_mangle)]
                extern "C" fn sluicebox_init(__sluicebox_block: i32) -> i32 {
                    ::sluicebox_guest::__rt::init(__sluicebox_block, #ident)
                }
            };
        });
    }

    let (checker, runner) = match kind {
        Kind::Filter => (quote!(check_filter), quote!(filter)),
        Kind::Map => (quote!(check_map), quote!(map)),
        _ => (quote!(check_flat_map), quote!(flat_map)),
    };
    let check = quote_spanned! {sig_span=> ::sluicebox_guest::__rt::#checker(#ident); };
    let raw = args.raw.as_ref().is_some_and(|r| r.value);
    let (fields, joined, fields_export) = match &args.fields {
        None => (
            quote!(::core::option::Option::None),
            LitStr::new("", Span::call_site()),
            quote!(),
        ),
        Some(list) => {
            let values: Vec<String> = list.iter().map(LitStr::value).collect();
            (
                quote!(::core::option::Option::Some(&[#(#list),*])),
                LitStr::new(&values.join("\n"), Span::call_site()),
                quote! {
                    #[unsafe(no_mangle)]
                    extern "C" fn sluicebox_fields() -> i32 {
                        ::sluicebox_guest::__rt::fields(&__SLUICEBOX_SPEC)
                    }
                },
            )
        }
    };
    Ok(quote! {
        #func

        // A second filter in the crate redefines this name: one filter per module.
        #[doc(hidden)]
        #[macro_export]
        macro_rules! __sluicebox_only_one_filter_map_or_flat_map_per_crate {
            () => {};
        }

        const _: () = {
            #[allow(dead_code)]
            fn __sluicebox_check_signature() {
                #check
            }
        };

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static __SLUICEBOX_SPEC: ::sluicebox_guest::__rt::Spec<'static> = ::sluicebox_guest::__rt::Spec {
                fields: #fields,
                joined: #joined,
                raw: #raw,
            };

            #[unsafe(no_mangle)]
            extern "C" fn sluicebox_abi_version() -> i32 {
                ::sluicebox_guest::__rt::abi_version()
            }

            #[unsafe(no_mangle)]
            extern "C" fn sluicebox_alloc(__sluicebox_size: i32, __sluicebox_align: i32) -> i32 {
                ::sluicebox_guest::__rt::alloc(__sluicebox_size, __sluicebox_align)
            }

            #fields_export

            #[unsafe(no_mangle)]
            extern "C" fn sluicebox_filter(__sluicebox_header: i32) -> i32 {
                ::sluicebox_guest::__rt::#runner(__sluicebox_header, &__SLUICEBOX_SPEC, #ident)
            }
        };
    })
}
