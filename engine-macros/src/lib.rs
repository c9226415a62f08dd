//! `#[orchestration]` and `#[activity]`: an `async fn` becomes the registered, typed function.
//!
//! ```text
//! #[orchestration]
//! async fn hello_sequence(ctx: OrchestrationContext, names: Vec<String>) -> Result<Vec<String>, Failure> { … }
//! ```
//!
//! expands to a unit struct named after the function in CamelCase (`HelloSequence`) that
//! implements `engine::Orchestration` with `NAME = "HelloSequence"`, `Input = Vec<String>` and
//! `Output = Vec<String>`, the function body as `run`. `#[activity]` does the same for
//! `engine::Activity` (first argument an `ActivityContext`). Both take optional arguments:
//! `name = "…"` (the registered name), `crate = path` (where the engine is, default `::engine`),
//! and for orchestrations `version = "…"` and `validate = path` (a
//! `fn(&Input) -> Result<(), String>`).
//!
//! Calls stay typed: `ctx.call_activity::<SayHello>(&name)`, `client.start::<HelloSequence>(…)`.
//!
//! `#[entity]` on an `impl` block of operation methods makes the type an entity (see [`entity`]'s
//! module): `ctx.call_entity(Counter::add(&key, 5))`.

mod entity;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote};
use syn::{
    FnArg, GenericArgument, Ident, ItemFn, LitStr, Path, PathArguments, ReturnType, Token, Type,
    parse::{Parse, ParseStream},
    parse_macro_input,
    spanned::Spanned,
};

/// Turns `async fn name(ctx: OrchestrationContext, input: In) -> Result<Out, Failure>` into
/// the orchestration `Name`.
#[proc_macro_attribute]
pub fn orchestration(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(args as Args);
    let item = parse_macro_input!(item as ItemFn);
    expand(Kind::Orchestration, args, item)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Turns `async fn name(ctx: ActivityContext, input: In) -> Result<Out, Failure>` into the
/// activity `Name` (register it with `registry.activity(Name)`).
#[proc_macro_attribute]
pub fn activity(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(args as Args);
    let item = parse_macro_input!(item as ItemFn);
    expand(Kind::Activity, args, item)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Turns an `impl Entity { fn op(&mut self, ctx: &mut EntityContext, inputs…) -> Result<Out,
/// Failure> … }` block into the entity's operation types, request constructors and builder.
#[proc_macro_attribute]
pub fn entity(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = parse_macro_input!(args as Args);
    let item = parse_macro_input!(item as syn::ItemImpl);
    entity::expand(args, item)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Orchestration,
    Activity,
}

/// `name = "…", version = "…", validate = path, crate = path`, and for activities `limiter =
/// "…", breaker = "…", concurrency = N`, all optional.
#[derive(Default)]
struct Args {
    name: Option<LitStr>,
    version: Option<LitStr>,
    validate: Option<Path>,
    krate: Option<Path>,
    limiter: Option<LitStr>,
    breaker: Option<LitStr>,
    concurrency: Option<syn::LitInt>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            let key: Ident = if input.peek(Token![crate]) {
                input.parse::<Token![crate]>()?;
                Ident::new("crate", Span::call_site())
            } else {
                input.parse()?
            };
            input.parse::<Token![=]>()?;
            match key.to_string().as_str() {
                "name" => args.name = Some(input.parse()?),
                "version" => args.version = Some(input.parse()?),
                "validate" => args.validate = Some(input.parse()?),
                "crate" => args.krate = Some(input.parse()?),
                "limiter" => args.limiter = Some(input.parse()?),
                "breaker" => args.breaker = Some(input.parse()?),
                "concurrency" => {
                    let n: syn::LitInt = input.parse()?;
                    if n.base10_parse::<u32>()? == 0 {
                        return Err(syn::Error::new(
                            n.span(),
                            "a concurrency limit must be at least 1",
                        ));
                    }
                    args.concurrency = Some(n);
                }
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!(
                            "unknown argument `{other}`: use name, version, validate, crate, \
                             limiter, breaker or concurrency"
                        ),
                    ));
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

/// `hello_sequence` → `HelloSequence`.
fn camel_case(snake: &str) -> String {
    snake
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect()
}

/// `T` of `Result<T, _>`.
fn ok_type(output: &ReturnType) -> syn::Result<&Type> {
    let error = || {
        syn::Error::new(
            output.span(),
            "the function must return `Result<Output, Failure>`",
        )
    };
    let ReturnType::Type(_, ty) = output else {
        return Err(error());
    };
    let Type::Path(path) = &**ty else {
        return Err(error());
    };
    let last = path.path.segments.last().ok_or_else(error)?;
    let PathArguments::AngleBracketed(generics) = &last.arguments else {
        return Err(error());
    };
    match generics.args.first() {
        Some(GenericArgument::Type(ok)) if last.ident == "Result" => Ok(ok),
        _ => Err(error()),
    }
}

fn expand(kind: Kind, args: Args, item: ItemFn) -> syn::Result<Tokens> {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
        ..
    } = item;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "expected an `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "an orchestration or activity cannot be generic",
        ));
    }
    let inputs: Vec<&FnArg> = sig.inputs.iter().collect();
    let [FnArg::Typed(ctx), FnArg::Typed(input)] = inputs.as_slice() else {
        return Err(syn::Error::new(
            sig.inputs.span(),
            "expected two arguments: the context and the input (use `(): ()` for none)",
        ));
    };
    let (ctx_pat, ctx_ty) = (&ctx.pat, &ctx.ty);
    let (input_pat, input_ty) = (&input.pat, &input.ty);
    let output_ty = ok_type(&sig.output)?;
    let ret = &sig.output;
    let ident = format_ident!(
        "{}",
        camel_case(&sig.ident.to_string()),
        span = sig.ident.span()
    );
    let name = args
        .name
        .unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let krate = args.krate.unwrap_or_else(|| syn::parse_quote!(::engine));
    let body = match kind {
        Kind::Orchestration => {
            if let Some(extra) = args
                .limiter
                .as_ref()
                .map(|l| l.span())
                .or(args.breaker.as_ref().map(|b| b.span()))
                .or(args.concurrency.as_ref().map(|c| c.span()))
            {
                return Err(syn::Error::new(
                    extra,
                    "limiter, breaker and concurrency are activity options",
                ));
            }
            let version = args
                .version
                .map(|v| quote!(const VERSION: &'static str = #v;));
            let validate = args.validate.map(|f| {
                quote! {
                    fn validate(input: &Self::Input) -> ::core::result::Result<(), ::std::string::String> {
                        #f(input)
                    }
                }
            });
            quote! {
                impl #krate::Orchestration for #ident {
                    const NAME: &'static str = #name;
                    #version
                    type Input = #input_ty;
                    type Output = #output_ty;
                    #validate
                    async fn run(#ctx_pat: #ctx_ty, #input_pat: #input_ty) #ret #block
                }
            }
        }
        Kind::Activity => {
            if let Some(extra) = args
                .version
                .map(|v| v.span())
                .or(args.validate.map(|p| p.span()))
            {
                return Err(syn::Error::new(
                    extra,
                    "an activity takes `name`, `crate`, `limiter`, `breaker` and `concurrency`",
                ));
            }
            let options = if args.limiter.is_some()
                || args.breaker.is_some()
                || args.concurrency.is_some()
            {
                let some_str = |v: &Option<LitStr>| match v {
                    Some(v) => quote!(::core::option::Option::Some(#v)),
                    None => quote!(::core::option::Option::None),
                };
                let (limiter, breaker) = (some_str(&args.limiter), some_str(&args.breaker));
                let concurrency = match &args.concurrency {
                    Some(n) => quote!(::core::option::Option::Some(#n)),
                    None => quote!(::core::option::Option::None),
                };
                Some(quote! {
                    const OPTIONS: #krate::registry::ActivityOptions = #krate::registry::ActivityOptions {
                        limiter: #limiter,
                        breaker: #breaker,
                        concurrency: #concurrency,
                    };
                })
            } else {
                None
            };
            quote! {
                impl #krate::Activity for #ident {
                    const NAME: &'static str = #name;
                    type Input = #input_ty;
                    type Output = #output_ty;
                    #options
                    async fn run(&self, #ctx_pat: #ctx_ty, #input_pat: #input_ty) #ret #block
                }
            }
        }
    };
    Ok(quote! {
        #(#attrs)*
        #[derive(Debug, Clone, Copy, Default)]
        #vis struct #ident;
        #body
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_become_type_names() {
        assert_eq!(camel_case("hello_sequence"), "HelloSequence");
        assert_eq!(camel_case("fan_out_fan_in"), "FanOutFanIn");
        assert_eq!(camel_case("monitor"), "Monitor");
        assert_eq!(camel_case("_private__name_"), "PrivateName");
    }

    #[test]
    fn the_output_type_is_read_from_the_result() {
        let ret: ReturnType = syn::parse_quote!(-> Result<Vec<String>, Failure>);
        let ok = ok_type(&ret).unwrap();
        assert_eq!(quote!(#ok).to_string(), "Vec < String >");
        let bad: ReturnType = syn::parse_quote!(-> Vec<String>);
        assert!(ok_type(&bad).is_err());
    }

    #[test]
    fn activity_options_become_its_const_and_are_refused_on_orchestrations() {
        let f: ItemFn = syn::parse_quote!(
            async fn call(ctx: C, x: u32) -> Result<u32, Failure> {
                Ok(x)
            }
        );
        let args: Args = syn::parse_quote!(limiter = "api", breaker = "api", concurrency = 4);
        let out = expand(Kind::Activity, args, f).unwrap().to_string();
        assert!(out.contains("const OPTIONS"), "{out}");
        assert!(
            out.contains("Some (\"api\")") && out.contains("Some (4)"),
            "{out}"
        );
        let f: ItemFn = syn::parse_quote!(
            async fn call(ctx: C, x: u32) -> Result<u32, Failure> {
                Ok(x)
            }
        );
        let args: Args = syn::parse_quote!(breaker = "api");
        let err = expand(Kind::Orchestration, args, f).err().unwrap();
        assert!(err.to_string().contains("activity options"));
        assert!(syn::parse_str::<Args>("concurrency = 0").is_err());
    }

    #[test]
    fn a_function_without_async_or_with_one_argument_is_refused() {
        let sync: ItemFn = syn::parse_quote!(
            fn f(ctx: C, x: u32) -> Result<u32, Failure> {
                Ok(x)
            }
        );
        let err = expand(Kind::Orchestration, Args::default(), sync)
            .err()
            .unwrap();
        assert!(err.to_string().contains("async fn"));
        let one: ItemFn = syn::parse_quote!(
            async fn f(x: u32) -> Result<u32, Failure> {
                Ok(x)
            }
        );
        let err = expand(Kind::Activity, Args::default(), one).err().unwrap();
        assert!(err.to_string().contains("two arguments"));
    }
}
